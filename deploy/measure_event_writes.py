"""What Dagster's event log costs in PostgreSQL per partition, measured with the shipped instance file.

    python deploy/measure_event_writes.py [--clips 100] [--replays 40] [--writers 1,2,4,8]

1. Materializes one real partition (a processed video of --clips clips) in process, against a fresh
   database configured by deploy/dagster.yaml, and counts the events the run wrote and their sizes.
2. Replays that run's events (same documents, a new run id each time) through the event log storage,
   from 1, 2, 4 ... writer processes at once, as run workers write them: one insert per event.

Prints events per run and per partition, event sizes, and events/s and partitions/s the database took
with each number of writers. Needs the PostgreSQL server of the machine (127.0.0.1:5432, trust auth, as
the tests use); the database is dropped afterwards. On one machine the writers, the server and this
script share the cores: read the figures as a lower bound for a dedicated database server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test factories build the processed video

from dagster import (  # noqa: E402
    DagsterInstance,
    EventLogEntry,
    deserialize_value,
    instance_for_test,
    materialize,
    serialize_value,
)

from clip_assets_tests.support.deployment import LOCAL_INSTANCE, fresh_database  # noqa: E402

FAMILY_EVENTS = {"ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED"}


def real_run(home: str, clips: int, scratch: Path) -> tuple[list[EventLogEntry], float]:
    """One partition through the five family assets, events written to PostgreSQL; its records and time."""
    from clip_assets.components.resources import WriterSettingsResource
    from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos
    from clip_assets_tests.support.factories import make_clips, write_video

    inbox = scratch / "inbox"
    write_video(inbox / "v.mp4.parquet", make_clips(clips, source_video="/videos/v.mp4"), source_video="/videos/v.mp4")
    with DagsterInstance.from_config(home) as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, ["v.mp4"])
        started = time.perf_counter()
        result = materialize(
            [processed_videos, *FAMILY_ASSETS],
            partition_key="v.mp4",
            instance=instance,
            resources=build_resources(str(inbox), str(scratch / "out"), WriterSettingsResource(input_path="/videos")),
        )
        seconds = time.perf_counter() - started
        assert result.success
        return list(instance.all_logs(result.run_id)), seconds


def writer(home: str, env: dict[str, str], documents: list[str], rounds: int, barrier: Any, results: Any) -> None:
    """Store `rounds` copies of a run's events, one insert each, starting with the other writers."""
    os.environ.update(env)
    records = [deserialize_value(d, EventLogEntry) for d in documents]
    with DagsterInstance.from_config(home) as instance:
        storage = instance.event_log_storage
        storage.store_event(records[0]._replace(run_id=str(uuid.uuid4())))  # connect before the clock starts
        barrier.wait()
        started = time.time()
        durations = []
        for _ in range(rounds):
            run_id = str(uuid.uuid4())
            begun = time.perf_counter()
            for record in records:
                storage.store_event(record._replace(run_id=run_id))
            durations.append(time.perf_counter() - begun)
        results.put((started, time.time(), durations))


def replay(
    home: str, env: dict[str, str], records: list[EventLogEntry], writers: int, rounds: int
) -> tuple[float, list[float]]:
    """Wall time of `writers` processes each storing `rounds` run copies at once, and every copy's time."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(writers), context.Queue()
    documents = [serialize_value(r) for r in records]
    processes = [
        context.Process(target=writer, args=(home, env, documents, rounds, barrier, results)) for _ in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    wall = max(end for _, end, _ in outcomes) - min(start for start, _, _ in outcomes)
    return wall, [d for _, _, durations in outcomes for d in durations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--replays", type=int, default=40, help="run copies stored per writer count")
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument(
        "--port", type=int, default=None, help="port the instance connects to, e.g. a PgBouncer's (default: 5432)"
    )
    options = parser.parse_args()

    with fresh_database("clip_assets_measure") as database, tempfile.TemporaryDirectory() as tmp:
        env = {**database.env, **({"DAGSTER_PG_PORT": str(options.port)} if options.port else {})}
        os.environ.update(env)
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
        with instance_for_test():  # warms imports, like a run worker that has started
            pass
        records, run_seconds = real_run(str(home), options.clips, Path(tmp))
        kinds = Counter(r.dagster_event_type.value if r.dagster_event_type else "LOG" for r in records)
        per_partition = sum(n for kind, n in kinds.items() if kind in FAMILY_EVENTS)
        sizes = sorted(len(serialize_value(r)) for r in records)
        mat_sizes = [
            len(serialize_value(r))
            for r in records
            if r.dagster_event_type and r.dagster_event_type.value == "ASSET_MATERIALIZATION"
        ]
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; port {env['DAGSTER_PG_PORT']}")
        print(f"one partition of {options.clips} clips, in process: {run_seconds:.2f} s")
        print(
            f"events of the run: {len(records)}; per partition (planned + materialization x 5 families): "
            f"{per_partition}; fixed per run: {len(records) - per_partition}"
        )
        print(
            f"event size: median {statistics.median(sizes)} B, max {sizes[-1]} B; "
            f"materializations median {statistics.median(mat_sizes)} B"
        )
        print(f"{'writers':>8} {'events/s':>10} {'ms/event':>9} {'runs/s':>7} {'partitions/s (25/run)':>22}")
        events_per_run_25 = (len(records) - per_partition) + 25 * per_partition
        for writers in (int(w) for w in options.writers.split(",")):
            rounds = max(1, options.replays // writers)
            wall, durations = replay(str(home), env, records, writers, rounds)
            events = len(durations) * len(records)
            rate = events / wall
            latency_ms = statistics.median(durations) / len(records) * 1000
            print(
                f"{writers:>8} {rate:>10.0f} {latency_ms:>9.2f} {len(durations) / wall:>7.1f} "
                f"{rate / events_per_run_25 * 25:>22.1f}"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
