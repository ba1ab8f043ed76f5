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

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from benchmarks.bench_local import inbox_for
from benchmarks.bench_nemo import Unavailable, ensure_ffprobe, nemo_once, nemo_python
from benchmarks.harness import Context, Row, Target, paired_ratios, progress, settle
from benchmarks.production import production_database, production_instance, quiet_deployment, write_home
from benchmarks.runners import add_partitions, tree_size
from benchmarks.workloads import INPUT_PATH, Workload
from clip_assets.families import FAMILIES
from clip_assets_tests.support.deployment import Deployment
from clip_assets_tests.support.graphql import BACKFILL_DONE, backfill_state, launch_asset_backfill, run_failures

TARGET = Target(">=", 10.0, ">= 10x NeMo")
BACKFILL_TAG = "dagster/backfill"
INSTANCE = "deploy/dagster.yaml unchanged (PostgreSQL, QueuedRunCoordinator, DefaultRunLauncher)"
# Generous: W2's 8 runs of 25 partitions on 2 cores take about a minute; a stuck queue must not hang the suite.
BACKFILL_TIMEOUT_S = 900


def backfill_runs(instance: DagsterInstance, backfill_id: str) -> list[Any]:
    return list(instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfill_id})))


def finished_backfill(deployment: Deployment, backfill_id: str) -> dict[str, Any] | None:
    state = backfill_state(deployment.graphql, backfill_id)
    return state if state["status"] in BACKFILL_DONE else None


def backfill_once(deployment: Deployment, instance: DagsterInstance, keys: Sequence[str], title: str) -> dict[str, Any]:
    """Launch a backfill of every family over `keys`, wait until it is done; its timeline in seconds from launch."""
    families = [family.name for family in FAMILIES]
    launched = time.time()
    backfill_id = launch_asset_backfill(deployment.graphql, families, keys, title)
    state = deployment.wait(
        lambda: finished_backfill(deployment, backfill_id),
        BACKFILL_TIMEOUT_S,
        f"backfill {backfill_id} of {len(keys)} partitions to finish",
        interval_s=0.5,
    )
    records = backfill_runs(instance, backfill_id)
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
    if state["status"] != "COMPLETED_SUCCESS" or failed or not records:
        reasons = {run_id: run_failures(deployment.graphql, run_id) for run_id in failed}
        ended_as = f"backfill {backfill_id} ended {state['status']}"
        raise RuntimeError(f"{ended_as}; failed runs {reasons}\n{deployment.logs()}")
    created = [r.create_timestamp.timestamp() - launched for r in records]
    started = [(r.start_time or launched) - launched for r in records]
    ended = [(r.end_time or launched) - launched for r in records]
    return {
        "backfill_id": backfill_id,
        "runs": len(records),
        "seconds": max(ended),
        "first_run_created": min(created),
        "last_run_created": max(created),
        "first_run_started": min(started),
        "run_durations": sorted(e - s for s, e in zip(started, ended, strict=True)),
    }


def link_inbox(source: Path, keys: Sequence[str], inbox: Path) -> None:
    """The workload's files into the deployment's inbox as hard links (same bytes, size and mtime)."""
    for key in keys:
        os.link(source / f"{key}.parquet", inbox / f"{key}.parquet")


def measure(ctx: Context, workload: Workload, python: Path) -> list[Row]:
    source, keys = inbox_for(ctx, workload)
    root = ctx.scratch / f"production-{workload.name}"
    inbox, output = root / "inbox", root / "output"
    inbox.mkdir(parents=True)
    files = [source / f"{key}.parquet" for key in keys]
    nemo_walls: list[float] = []
    ours: list[float] = []
    timelines: list[dict[str, Any]] = []
    env = {"CLIP_ASSETS_INBOX": str(inbox), "CLIP_ASSETS_OUTPUT": str(output), "CLIP_ASSETS_INPUT_PATH": INPUT_PATH}
    progress(f"production {workload.name}: PostgreSQL database, code server, daemon and webserver")
    with production_database() as database:
        home = write_home(root / "home")
        with (
            quiet_deployment(home, database, env, root / "logs") as deployment,
            production_instance(home) as instance,
        ):
            link_inbox(source, keys, inbox)
            add_partitions(instance, keys)
            for index in range(ctx.repeat):
                progress(f"production {workload.name}: repetition {index + 1}/{ctx.repeat}")
                settle()
                wall, _ = nemo_once(python, files, root / "nemo")
                nemo_walls.append(wall)
                nemo_files = tree_size(root / "nemo")[0]
                shutil.rmtree(root / "nemo")
                shutil.rmtree(output, ignore_errors=True)
                settle()
                timeline = backfill_once(deployment, instance, keys, f"benchmark {workload.name} #{index + 1}")
                ours_files = tree_size(output)[0]
                if ours_files != nemo_files:
                    raise RuntimeError(f"NeMo wrote {nemo_files} files, the production backfill {ours_files}")
                ours.append(timeline["seconds"])
                timelines.append(timeline)
    shutil.rmtree(root, ignore_errors=True)
    clips = workload.total_clips
    nemo_rate = [clips / s for s in nemo_walls]
    our_rate = [clips / s for s in ours]
    # The runs alone: from the first run's start to the last run's end, the daemons' polling left out.
    runs_rate = [clips / (t["seconds"] - t["first_run_started"]) for t in timelines]
    details = {"clips": clips, "nemo_wall_seconds": nemo_walls, "backfills": timelines, "instance": INSTANCE}
    runs = timelines[0]["runs"]
    return [
        Row("production", workload.description, "NeMo ClipWriterStage (wall, incl. reading)", "clips/s", nemo_rate,
            "itself", nemo_rate, [1.0] * len(nemo_rate), ratio_label="x NeMo", details=details),
        Row("production", workload.description,
            f"backfill on PostgreSQL, {runs} queued runs launched by the daemon (launch to last run's end)",
            "clips/s", our_rate, "NeMo clips/s", nemo_rate, paired_ratios(our_rate, nemo_rate), ratio_label="x NeMo",
            target=TARGET, details=details),
        Row("production", workload.description,
            "the same, runs only (first run's start to last run's end, the daemons' polling left out)", "clips/s",
            runs_rate, "NeMo clips/s", nemo_rate, paired_ratios(runs_rate, nemo_rate), ratio_label="x NeMo"),
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
