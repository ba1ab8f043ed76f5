"""The production path against NeMo Curator: a backfill on the instance `deploy/` configures, runs launched
by the daemon from the queue, clips/s side by side with NeMo's `ClipWriterStage` in the same invocation.

What runs is what a single-machine deployment runs (deploy/README.md): the shipped deploy/dagster.yaml
unchanged (PostgreSQL storage on a throwaway database of the machine's server, QueuedRunCoordinator,
DefaultRunLauncher, its run limits), the code server, `dagster-daemon` and `dagster-webserver` as
processes on loopback (the deployment test's machinery). The dataset's inbox is the workload, its
partitions registered as `clip-assets discover` registers them; each repetition launches a backfill of
every output family over every partition through the webserver's GraphQL (the UI's Materialize
dialog), on an emptied output folder. The backfill daemon turns it into runs of the dataset's
`partitions_per_run` (25 by default), the run queue starts them as processes (at most
`max_concurrent_runs` at once), and the time is from the launch to the end of the last run. The
sensors are stopped first: their runs would compete for the cores (the sensor path adds its interval
to the same runs).

NeMo's figure is measured as in bench_nemo (the same files, wall time including reading), interleaved
with ours per repetition. Both trees are counted: a run that wrote less than NeMo fails the benchmark.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from benchmarks.bench_local import inbox_for
from benchmarks.bench_nemo import Unavailable, ensure_ffprobe, nemo_once, nemo_python
from benchmarks.harness import Context, Row, Target, paired_ratios, progress, settle
from benchmarks.production import (
    production_database,
    production_instance,
    quiet_deployment,
    start_sensor,
    write_home,
)
from benchmarks.runners import NAMES, tree_size
from benchmarks.workloads import INPUT_PATH, Workload
from clip_assets.components.environment import INBOX_VAR, INPUT_PATH_VAR, OUTPUT_VAR, SENSOR_INTERVAL_VAR
from clip_assets.families import FAMILIES
from clip_assets_tests.support.deployment import Deployment, partitions_of
from clip_assets_tests.support.graphql import BACKFILL_DONE, backfill_state, launch_asset_backfill, run_failures

TARGET = Target(">=", 10.0, ">= 10x NeMo")
BACKFILL_TAG = "dagster/backfill"
INSTANCE = "deploy/dagster.yaml unchanged (PostgreSQL, QueuedRunCoordinator, DefaultRunLauncher)"
# Generous: W2's 8 runs of 25 partitions on 2 cores take about a minute; a stuck queue must not hang the suite.
RUNS_TIMEOUT_S = 900
SENSOR = NAMES.name("processed_video_sensor")
# As the deployment test runs it; the shipped default is 30 s (CLIP_ASSETS_SENSOR_INTERVAL_S), which
# adds up to 30 s to a first run's start.
SENSOR_INTERVAL_S = 5
SUCCESS = DagsterRunStatus.SUCCESS


def timeline(records: Sequence[RunRecord], origin: float) -> dict[str, Any]:
    """When the runs were created, started and ended, in seconds from `origin`; `seconds` is the last end."""
    created = [r.create_timestamp.timestamp() - origin for r in records]
    started = [(r.start_time or origin) - origin for r in records]
    ended = [(r.end_time or origin) - origin for r in records]
    return {
        "runs": len(records),
        "seconds": max(ended),
        "first_run_created": min(created),
        "last_run_created": max(created),
        "first_run_started": min(started),
        "run_durations": sorted(e - s for s, e in zip(started, ended, strict=True)),
    }


def fail_on_failed(deployment: Deployment, records: Sequence[RunRecord], what: str) -> None:
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.is_finished and r.dagster_run.status != SUCCESS]
    if failed:
        reasons = {run_id: run_failures(deployment.graphql, run_id) for run_id in failed}
        raise RuntimeError(f"{what}: failed runs {reasons}\n{deployment.logs()}")


def sensor_once(
    deployment: Deployment, instance: DagsterInstance, files: Sequence[Path], inbox: Path
) -> dict[str, Any]:
    """The files arrive in the inbox (new the first time, then rewritten: a new mtime), the running sensor
    requests runs; the time until all are written.

    Hard links: the same bytes without a copy. Until the first call the inbox is empty, so the sensor's
    ticks before it (during NeMo's run) find nothing.
    """
    origin = time.time()
    for path in files:
        arrived = inbox / path.name
        if not arrived.exists():
            os.link(path, arrived)
        os.utime(arrived, (origin, origin))
    keys = [path.name.removesuffix(".parquet") for path in files]
    since = datetime.datetime.fromtimestamp(origin, datetime.UTC)
    runs_filter = RunsFilter(tags={"dagster/sensor_name": SENSOR}, created_after=since)

    def written() -> list[RunRecord] | None:
        records = list(instance.get_run_records(runs_filter))
        fail_on_failed(deployment, records, "the sensor's runs")
        if not records or not all(r.dagster_run.is_finished for r in records):
            return None
        order = list(instance.get_dynamic_partitions(NAMES.partitions))
        done = {key for r in records for key in partitions_of(r.dagster_run.tags, order)}
        return records if done >= set(keys) else None

    records = deployment.wait(written, RUNS_TIMEOUT_S, f"the sensor's runs of {len(keys)} partitions", interval_s=0.5)
    return timeline(records, origin)


def finished_backfill(deployment: Deployment, backfill_id: str) -> dict[str, Any] | None:
    state = backfill_state(deployment.graphql, backfill_id)
    return state if state["status"] in BACKFILL_DONE else None


def backfill_once(deployment: Deployment, instance: DagsterInstance, keys: Sequence[str], title: str) -> dict[str, Any]:
    """A backfill of every family over `keys` as the UI launches it (with the families' checks), until done."""
    families = [family.name for family in FAMILIES]
    origin = time.time()
    backfill_id = launch_asset_backfill(deployment.graphql, families, keys, title)
    state = deployment.wait(
        lambda: finished_backfill(deployment, backfill_id),
        RUNS_TIMEOUT_S,
        f"backfill {backfill_id} of {len(keys)} partitions to finish",
        interval_s=0.5,
    )
    records = list(instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfill_id})))
    fail_on_failed(deployment, records, f"backfill {backfill_id}")
    if state["status"] != "COMPLETED_SUCCESS" or not records:
        raise RuntimeError(f"backfill {backfill_id} ended {state['status']} with {len(records)} runs")
    return {"backfill_id": backfill_id, **timeline(records, origin)}


def measure(ctx: Context, workload: Workload, python: Path) -> list[Row]:
    source, keys = inbox_for(ctx, workload)
    root = ctx.scratch / f"production-{workload.name}"
    inbox, output = root / "inbox", root / "output"
    inbox.mkdir(parents=True)
    files = [source / f"{key}.parquet" for key in keys]
    samples: dict[str, list[float]] = {"nemo": [], "sensor": [], "sensor runs": [], "backfill": []}
    timelines: dict[str, list[dict[str, Any]]] = {"sensor": [], "backfill": []}
    env = {INBOX_VAR: str(inbox), OUTPUT_VAR: str(output), INPUT_PATH_VAR: INPUT_PATH,
           SENSOR_INTERVAL_VAR: str(SENSOR_INTERVAL_S)}  # fmt: skip
    progress(f"production {workload.name}: PostgreSQL database, code server, daemon and webserver")
    with production_database() as database:
        home = write_home(root / "home")
        with (
            quiet_deployment(home, database, env, root / "logs") as deployment,
            production_instance(home) as instance,
        ):
            start_sensor(deployment.graphql, SENSOR)
            for index in range(ctx.repeat):
                progress(f"production {workload.name}: repetition {index + 1}/{ctx.repeat}")
                settle()
                wall, _ = nemo_once(python, files, root / "nemo")
                samples["nemo"].append(wall)
                nemo_files = tree_size(root / "nemo")[0]
                shutil.rmtree(root / "nemo")
                for kind in ("sensor", "backfill"):
                    shutil.rmtree(output, ignore_errors=True)
                    settle()
                    if kind == "sensor":
                        times = sensor_once(deployment, instance, files, inbox)
                    else:
                        times = backfill_once(deployment, instance, keys, f"benchmark {workload.name} #{index + 1}")
                    written = tree_size(output)[0]
                    if written != nemo_files:
                        raise RuntimeError(f"NeMo wrote {nemo_files} files, the {kind} path {written}")
                    samples[kind].append(times["seconds"])
                    timelines[kind].append(times)
                runs = timelines["sensor"][-1]
                samples["sensor runs"].append(runs["seconds"] - runs["first_run_started"])
    shutil.rmtree(root, ignore_errors=True)
    clips = workload.total_clips
    rate = {name: [clips / s for s in values] for name, values in samples.items()}
    nemo = rate["nemo"]
    details = {"clips": clips, "nemo_wall_seconds": samples["nemo"], **timelines, "instance": INSTANCE,
               "sensor_interval_s": SENSOR_INTERVAL_S}  # fmt: skip
    sensor_runs, backfill_runs = timelines["sensor"][0]["runs"], timelines["backfill"][0]["runs"]
    return [
        Row("production", workload.description, "NeMo ClipWriterStage (wall, incl. reading)", "clips/s", nemo,
            "itself", nemo, [1.0] * len(nemo), ratio_label="x NeMo", details=details),
        Row("production", workload.description,
            f"sensor -> {sensor_runs} queued runs launched by the daemon, PostgreSQL (files arrive to last run's end)",
            "clips/s", rate["sensor"], "NeMo clips/s", nemo, paired_ratios(rate["sensor"], nemo),
            ratio_label="x NeMo", target=TARGET, details=details),
        Row("production", workload.description,
            "the same, runs only (first run's start to last run's end, the daemons' polling left out)", "clips/s",
            rate["sensor runs"], "NeMo clips/s", nemo, paired_ratios(rate["sensor runs"], nemo), ratio_label="x NeMo"),
        Row("production", workload.description,
            f"UI backfill (with the intact checks) -> {backfill_runs} queued runs (launch to last run's end)",
            "clips/s", rate["backfill"], "NeMo clips/s", nemo, paired_ratios(rate["backfill"], nemo),
            ratio_label="x NeMo"),
    ]  # fmt: skip


def run(ctx: Context, workloads: Sequence[Workload]) -> list[Row]:
    try:
        ensure_ffprobe()
        python = nemo_python()
    except Unavailable as reason:
        progress(f"SKIPPED production benchmark (its floor is NeMo Curator): {reason}")
        return []
    rows: list[Row] = []
    for workload in workloads:
        rows += measure(ctx, workload, python)
    return rows
