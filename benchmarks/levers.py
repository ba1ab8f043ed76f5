"""The Dagster-path levers of docs/performance.md ("Levers measured"), each against its alternative in one run.

    python -m benchmarks.levers                        # 25 tiny partitions per run, 100,000 registered, 3 reps
    python -m benchmarks.levers --registered 10000 --repeat 1

Every measurement is one batched run (Dagster's range tags) of the same tiny partitions (two 8-frame
clips each, so the writing is negligible and what is timed is Dagster's bookkeeping), on a fresh
instance and output folder, interleaved per repetition:

- event storage: Dagster's default SQLite storage (a database per run plus an index database, one
  event per transaction) against the embedded instance's batched one (`clip_assets.instance`);
- planned events: one per partition (the default) against one per asset and run
  (`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`), both on the batched storage;
- recent partitions: the same run with `--registered` dynamic partitions in the instance, the batched
  storage with and without its recent-partitions cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import yaml
from dagster import DagsterInstance, instance_for_test
from dagster._core.storage.event_log import SqlEventLogStorage

from benchmarks.harness import Timer, settle
from benchmarks.runners import NAMES, add_partitions, dagster_write, embedded_instance
from benchmarks.workloads import build_tiny_inbox
from clip_assets.instance.storages import BATCH_SIZE_VAR, BatchedSqliteEventLogStorage, embedded_instance_config

SUBSET_VAR = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# Keys per add_dynamic_partitions call: SQLite bounds the parameters of one statement.
REGISTER_CHUNK = 10_000
Opener = Callable[[], AbstractContextManager[DagsterInstance]]


class UncachedBatchedStorage(BatchedSqliteEventLogStorage):
    """The batched storage reading the dynamic partitions table on every call: the cache's alternative."""

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        return SqlEventLogStorage.get_dynamic_partitions(self, partitions_def_name)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return SqlEventLogStorage.has_dynamic_partition(self, partitions_def_name, partition_key)


@contextmanager
def environment(name: str, value: str | None) -> Iterator[None]:
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def default_instance() -> Iterator[DagsterInstance]:
    """Dagster's own default: per-run SQLite event logs, events stored one by one (no batch size)."""
    with environment(BATCH_SIZE_VAR, None), instance_for_test() as instance:
        yield instance


@contextmanager
def uncached_instance() -> Iterator[DagsterInstance]:
    with tempfile.TemporaryDirectory(prefix="clip-assets-levers-") as home:
        config = embedded_instance_config(Path(home))
        config["event_log_storage"].update(module=__name__, **{"class": UncachedBatchedStorage.__name__})
        Path(home, "dagster.yaml").write_text(yaml.safe_dump(config))
        with DagsterInstance.from_config(home) as instance:
            yield instance


def timed_run(open_instance: Opener, inbox: Path, scratch: Path, keys: list[str], registered: int) -> float:
    """One batched run of `keys` on a fresh instance with `registered` other partitions; its seconds."""
    with open_instance() as instance:
        others = [f"registered-{index:07d}" for index in range(registered)]
        for start in range(0, registered, REGISTER_CHUNK):
            instance.add_dynamic_partitions(NAMES.partitions, others[start : start + REGISTER_CHUNK])
        add_partitions(instance, keys)
        output = Path(tempfile.mkdtemp(dir=scratch))
        settle()
        with Timer() as timer:
            dagster_write(instance, str(inbox), str(output), keys)
        return timer.seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=25, help="partitions in the run (one run)")
    parser.add_argument("--registered", type=int, default=100_000, help="dynamic partitions registered")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clip-assets-levers-") as scratch_dir:
        scratch = Path(scratch_dir)
        keys = build_tiny_inbox(scratch / "inbox", args.partitions)
        cases: dict[str, tuple[Opener, str | None, int]] = {
            "default storage": (default_instance, None, 0),
            "batched storage": (embedded_instance, None, 0),
            "batched, one planned event per asset": (embedded_instance, "true", 0),
            f"batched, {args.registered} registered, cached": (embedded_instance, None, args.registered),
            f"batched, {args.registered} registered, uncached": (uncached_instance, None, args.registered),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        timed_run(embedded_instance, scratch / "inbox", scratch, keys, 0)  # warm-up: imports, code digest
        for _ in range(args.repeat):
            for name, (open_instance, subset, registered) in cases.items():
                with environment(SUBSET_VAR, subset):
                    samples[name].append(timed_run(open_instance, scratch / "inbox", scratch, keys, registered))
    print(
        f"one batched run of {args.partitions} tiny partitions x 5 families, {args.repeat} repetitions: "
        "median (min-max) seconds; ratios per repetition"
    )
    pairs = [
        ("default storage", "batched storage"),
        ("batched storage", "batched, one planned event per asset"),
        (f"batched, {args.registered} registered, uncached", f"batched, {args.registered} registered, cached"),
    ]
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) s |")
    for slow, fast in pairs:
        ratios = [f / s for f, s in zip(samples[fast], samples[slow], strict=True)]
        print(f"| {fast} / {slow} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) x |")


if __name__ == "__main__":
    main()
