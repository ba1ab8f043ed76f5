"""The ways a partition's outputs get written, each timed by the caller: the floor, the engine, Dagster.

- floor: the produced tree's bytes replayed to the same relative paths with plain `open().write()`;
- engine: exactly the code the assets and the IO manager run (`find_inbox_file`, `partition_work`,
  `write_partitions`, family after family over ranges of PARTITIONS_PER_RUN partitions, as one run
  of a batched backfill handles them), without Dagster's run machinery;
- Dagster: in-process `materialize` of every family against an on-disk SQLite instance, one run per
  range of PARTITIONS_PER_RUN partitions (Dagster's range tags), or one run per partition.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from dagster import DagsterInstance, materialize

from benchmarks.workloads import INPUT_PATH
from clip_assets.assets import opening
from clip_assets.assets.clip_embeddings import clip_embeddings
from clip_assets.assets.clip_files import clip_files
from clip_assets.assets.clip_metadata import clip_metadata
from clip_assets.assets.clip_previews import clip_previews
from clip_assets.assets.family import PARTITIONS_PER_RUN, partition_work
from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.partitions import PARTITIONS_NAME, RANGE_END_TAG, RANGE_START_TAG
from clip_assets.assets.video_summaries import video_summaries
from clip_assets.batch_writer import write_partitions
from clip_assets.definitions import build_resources
from clip_assets.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.storage import Storage

# backfill_policy is beta in Dagster 1.13; its warning would repeat on every materialization.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
warnings.filterwarnings("ignore", message=".*(beta|preview).*")

FAMILY_ASSETS = [clip_files, clip_previews, clip_embeddings, clip_metadata, video_summaries]
FAMILY_NAMES = [asset.key.to_user_string() for asset in FAMILY_ASSETS]
INTERNAL_DIR = "_clip_assets"
LOG = logging.getLogger("benchmarks")


def writer_settings() -> WriterSettingsResource:
    return WriterSettingsResource(input_path=INPUT_PATH)


def ranges(keys: Sequence[str], size: int = PARTITIONS_PER_RUN) -> Iterator[list[str]]:
    """Consecutive runs of at most `size` keys: what a batched backfill and the sensor ask for."""
    for start in range(0, len(keys), size):
        yield list(keys[start : start + size])


def forget_inspections() -> None:
    """A deployment starts a process per run; an in-process repeat must not reuse the last run's inspections."""
    opening._INSPECTED.clear()
    opening._CLAIMED.clear()


def engine_write(inbox: str, output: str, keys: Sequence[str], s3: S3ConnectionResource | None = None) -> None:
    """Every family of every partition, as the assets and the IO manager write them, without Dagster."""
    forget_inspections()
    settings_resource = writer_settings()
    inbox_storage = StorageResource(url=inbox, s3=s3).get_storage()
    output_storage = StorageResource(url=output, s3=s3).get_storage()
    settings = settings_resource.to_settings(output_storage.root)
    limits = ValidationLimitsResource().to_limits()
    for batch in ranges(keys):
        for family in FAMILY_NAMES:
            work = [
                partition_work(
                    family=family,
                    partition_key=key,
                    file=opening.find_inbox_file(inbox_storage, key),
                    output=output_storage,
                    settings=settings,
                    limits=limits,
                    log=LOG,
                )
                for key in batch
            ]
            for outcome in write_partitions(output_storage, family, work, settings.max_workers):
                if outcome.error is not None:
                    raise outcome.error


def add_partitions(instance: DagsterInstance, keys: Sequence[str]) -> None:
    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(PARTITIONS_NAME, new)


def dagster_write(
    instance: DagsterInstance,
    inbox: str,
    output: str,
    keys: Sequence[str],
    *,
    batched: bool = True,
    s3: S3ConnectionResource | None = None,
) -> int:
    """Materialize every family of `keys`: one run per range (batched) or one per partition; returns the run count."""
    forget_inspections()
    resources = build_resources(inbox, output, writer_settings(), s3)
    runs = 0
    for batch in ranges(keys, PARTITIONS_PER_RUN if batched else 1):
        if len(batch) == 1:
            result = materialize(
                [processed_videos, *FAMILY_ASSETS], instance=instance, resources=resources, partition_key=batch[0]
            )
        else:
            result = materialize(
                [processed_videos, *FAMILY_ASSETS],
                instance=instance,
                resources=resources,
                tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
            )
        if not result.success:
            raise RuntimeError(f"materialization of {batch[0]}..{batch[-1]} failed")
        runs += 1
    return runs


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
