"""The ways a partition's outputs get written, each timed by the caller: the floor, the engine, Dagster.

- floor: the produced tree's bytes replayed to the same relative paths with plain `open().write()`;
- engine: exactly the code the assets' step runs (`write_partitions` of every family over ranges of
  PARTITIONS_PER_RUN partitions, as one run of a batched backfill handles them), without Dagster's
  run machinery;
- Dagster: `clip-assets backfill`'s loop (`run_backfill`: the curate job, in process) against the
  embedded instance (`clip-assets demo`'s: on-disk SQLite with the batched event log of
  `clip_assets.instance`), one run per range of PARTITIONS_PER_RUN partitions (Dagster's range
  tags), or one run per partition.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance

from benchmarks.workloads import INPUT_PATH
from clip_assets.cli.backfill import BackfillSteps, run_backfill
from clip_assets.components.dataset import dataset_definitions, dataset_resources
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.engine.batches import write_partitions
from clip_assets.engine.discovery import consecutive_ranges
from clip_assets.engine.partition import WriteJob
from clip_assets.families import FAMILIES
from clip_assets.instance.storages import use_embedded_instance
from clip_assets.storage import Storage

# backfill_policy is beta in Dagster 1.13; its warning would repeat on every materialization.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
warnings.filterwarnings("ignore", message=".*(beta|preview).*")

NAMES = DatasetNames()
# What the embedded default dataset runs with (clip_assets/defs/default_dataset/defs.yaml).
PARTITIONS_PER_RUN = 25
# The Dagster path timed against plain writes and NeMo's writer: the families, without the checks'
# re-read or the derived dataset (bench_dataset times those).
WRITES_ONLY = BackfillSteps(checks=False, dataset=False)
INTERNAL_DIR = "_clip_assets"
LOG = logging.getLogger("benchmarks")


def writer_settings(verify_unchanged: bool = True) -> WriterSettingsResource:
    return WriterSettingsResource(input_path=INPUT_PATH, verify_unchanged_outputs=verify_unchanged)


def ranges(keys: Sequence[str], size: int = PARTITIONS_PER_RUN) -> Iterator[list[str]]:
    """Consecutive runs of at most `size` keys: what a batched backfill and the sensor ask for."""
    for start in range(0, len(keys), size):
        yield list(keys[start : start + size])


def engine_write(
    inbox: str,
    output: str,
    keys: Sequence[str],
    s3: S3ConnectionResource | None = None,
    verify_unchanged: bool = True,
    read_ahead: bool = True,
) -> None:
    """Every family of every partition, as the assets' step writes them, without Dagster."""
    output_storage = StorageResource(url=output, s3=s3).get_storage()
    job = WriteJob(
        families=FAMILIES,
        inbox=StorageResource(url=inbox, s3=s3).get_storage(),
        output=output_storage,
        settings=writer_settings(verify_unchanged).to_settings(output_storage.root),
        limits=ValidationLimitsResource().to_limits(),
    )
    for batch in ranges(keys):
        for outcome in write_partitions(job, batch, LOG, read_ahead=read_ahead):
            for error in outcome.errors.values():
                raise error


@contextmanager
def embedded_instance() -> Iterator[DagsterInstance]:
    """A fresh embedded instance in a temporary Dagster home, removed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="clip-assets-bench-home-") as home,
        use_embedded_instance(Path(home)) as instance,
    ):
        yield instance


def add_partitions(instance: DagsterInstance, keys: Sequence[str]) -> None:
    known = set(instance.get_dynamic_partitions(NAMES.partitions))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(NAMES.partitions, new)


def dagster_write(
    instance: DagsterInstance,
    inbox: str,
    output: str,
    keys: Sequence[str],
    *,
    batched: bool = True,
    s3: S3ConnectionResource | None = None,
) -> int:
    """Materialize every family of `keys` as `clip-assets backfill --families-only --skip-checks` does
    (`run_backfill`: the curate job resolved once, one run per range of PARTITIONS_PER_RUN, or one per
    partition): the write path alone, as NeMo's writer is timed; returns the run count."""
    definitions = dataset_definitions(NAMES, dataset_resources(NAMES, inbox, output, writer_settings(), s3))
    per_run = PARTITIONS_PER_RUN if batched else 1
    failures: list[str] = []
    if not run_backfill(instance, definitions, NAMES, keys, per_run, failures.append, WRITES_ONLY):
        raise RuntimeError(f"materialization of {keys[0]}..{keys[-1]} failed: {failures}")
    return len(list(consecutive_ranges(keys, instance.get_dynamic_partitions(NAMES.partitions), per_run)))


def tree(root: Path) -> list[tuple[Path, bytes]]:
    """Every output file under `root` (relative path, bytes), clip-assets' own bookkeeping left out."""
    return [
        (path.relative_to(root), path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and INTERNAL_DIR not in path.relative_to(root).parts
    ]


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) of the output tree under `root`, bookkeeping left out."""
    files = size = 0
    for path in root.rglob("*"):
        if path.is_file() and INTERNAL_DIR not in path.relative_to(root).parts:
            files += 1
            size += path.stat().st_size
    return files, size


def plain_write(root: Path, files: Sequence[tuple[Path, bytes]]) -> None:
    """The floor: the same bytes to the same paths, `mkdir` and `open().write()`, nothing else."""
    for relative, data in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # noqa: PTH123 - the plain write is the point
            handle.write(data)


def storage_keys(storage: Storage) -> list[str]:
    return sorted(info.key for info in storage.list() if not info.key.startswith(INTERNAL_DIR))
