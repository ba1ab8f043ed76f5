"""100,000 partitions on the production instance: sensor ticks, `clip-assets discover`, the UI's partition
status of an output family, and a backfill of every partition enqueued, on PostgreSQL as deploy/ sets it up.

The inbox holds N tiny valid processed videos (copies of one file, dated a minute apart up to a minute
ago: an inbox filled over days, as in the discovery benchmark), and the instance knows them all as
partitions, registered in bulk through the instance API (`add_dynamic_partitions` in chunks), not by
running them. One family (`clip_files`) has a materialization of every partition, written as event
batches: the status the UI shows after a dataset was written, which is what costs when it is read.

- sensor: the real sensor's evaluation (`evaluate_inbox`, as bench_discovery calls it) against the
  PostgreSQL instance; the first tick with no cursor, then 10 new files and the next tick from the first
  tick's cursor. Target: the next tick costs < 10% of the first. The floor is a plain listing.
- discover: `clip-assets discover` as a user runs it (a process, DAGSTER_HOME on this instance), every
  file already known. It keeps no cursor: it reads every footer, like the sensor's first tick.
- UI: the query the asset page's Partitions tab sends (`PartitionHealthQuery`, copied from the
  webserver's bundled UI: `assetNodeOrError { partitionKeysByDimension assetPartitionStatuses }`) and the
  catalog's `partitionStats`, through dagster-webserver's GraphQL, first and repeated. Target < 2 s.
- backfill: "backfill all" (`launchPartitionBackfill` with `allPartitions`, every output family) through
  GraphQL, then the time until every run the backfill daemon makes from it is queued, for several
  `partitions_per_run` of the dataset's BackfillPolicy (a code location restart each). The run queue
  is held (`max_concurrent_runs: 0`, the one override of deploy/dagster.yaml here) so that what is timed is
  the enqueuing, not run workers competing for the cores; each backfill is then canceled and, once
  the daemon is stopped, its runs deleted. A choice that would take longer than ENQUEUE_BUDGET_S is
  stopped there and its total projected from its rate (the row says so).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import AssetMaterialization, DagsterInstance, DagsterRunStatus, RunsFilter

from benchmarks.bench_discovery import NEW_FILES, plain_listing, sensor_tick
from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress, stderr_to
from benchmarks.production import production_database, production_instance, quiet_deployment, write_home
from benchmarks.runners import NAMES
from benchmarks.workloads import INPUT_PATH, add_new_files, build_wide_inbox
from clip_assets.components.environment import INBOX_VAR, INPUT_PATH_VAR, OUTPUT_VAR, PARTITIONS_PER_RUN_VAR
from clip_assets.families import FAMILIES
from clip_assets_tests.support.deployment import Database, Deployment
from clip_assets_tests.support.graphql import (
    PARTITION_STATS_QUERY,
    DagsterGraphQL,
    cancel_backfill,
    launch_asset_backfill,
)
from clip_assets_tests.support.processes import script_path

INCREMENTAL = Target("<=", 0.1, "< 10% of first tick")
UI_TARGET = Target("<=", 2.0, "< 2 s", on_value=True)
REGISTER_CHUNK = 10_000
EVENT_BATCH = 2_000
# (partitions_per_run, DAGSTER_EVENT_BATCH_SIZE or None) for the backfill: the dataset's default, two
# larger ones, and the largest with the planned events of a run stored in batches. Creating a run stores
# one ASSET_MATERIALIZATION_PLANNED event per asset partition, one connection each on PostgreSQL; the
# batch size makes Dagster store them (the same events) in batches, which dagster-postgres implements.
PER_RUN_CHOICES: tuple[tuple[int, int | None], ...] = ((25, None), (500, None), (5_000, None), (5_000, 1_000))
ENQUEUE_BUDGET_S = 150.0
# The UI's queries return every partition key (MBs at 100,000): the client waits longer than the tests'.
UI_TIMEOUT_S = 300.0
STATUS_FAMILY = "clip_files"
BACKFILL_TAG = "dagster/backfill"
EVENT_BATCH_VAR = "DAGSTER_EVENT_BATCH_SIZE"
DISCOVERED_RE = re.compile(r"(\d+) processed videos in .*, (\d+) new partitions")

# The asset page's Partitions tab (dagster-webserver 1.13's bundled UI, PartitionHealthQuery), verbatim.
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""


def partition_keys(inbox: Path, files: Sequence[Path]) -> list[str]:
    """The partition key discovery gives each file: its path in the inbox without `.parquet`."""
    return [path.relative_to(inbox).as_posix().removesuffix(".parquet") for path in files]


def register(instance: DagsterInstance, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), REGISTER_CHUNK):
        instance.add_dynamic_partitions(NAMES.partitions, list(keys[start : start + REGISTER_CHUNK]))


def record_materializations(instance: DagsterInstance, family: str, keys: Sequence[str]) -> None:
    """A run-less materialization of `family` for every key, stored in event batches.

    What `report_runless_asset_event` stores, one call per event, is too slow to set up 100,000 of
    (about 9 ms each); dagster-postgres stores a batch in one statement.
    """
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    for start in range(0, len(keys), EVENT_BATCH):
        entries = []
        for key in keys[start : start + EVENT_BATCH]:
            event = DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(AssetMaterialization(NAMES.key(family), partition=key)),
            )
            entries.append(
                EventLogEntry(  # type: ignore[no-untyped-call]  # Dagster's record class has an untyped __new__
                    user_message="",
                    level=20,
                    job_name=RUNLESS_JOB_NAME,
                    run_id=RUNLESS_RUN_ID,
                    error_info=None,
                    timestamp=time.time(),
                    step_key=None,
                    dagster_event=event,
                )
            )
        instance.event_log_storage.store_event_batch(entries)


def discover_process(home: Path, database: Database, inbox: Path, expected: int) -> float:
    """`clip-assets discover` over the inbox as a process; its wall time. Every file must be found, none new."""
    env = {**os.environ, **database.env, "DAGSTER_HOME": str(home)}
    with Timer() as timer:
        done = subprocess.run(
            [script_path("clip-assets"), "discover", "--inbox", str(inbox)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    found = DISCOVERED_RE.search(done.stderr)
    if done.returncode != 0 or found is None or (int(found.group(1)), int(found.group(2))) != (expected, 0):
        raise RuntimeError(f"clip-assets discover (exit {done.returncode}), expected {expected} known:\n{done.stderr}")
    return timer.seconds


def sensor_ticks(ctx: Context, instance: DagsterInstance, inbox: Path, files: Sequence[Path]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"floor": [], "floor+new": [], "first": [], "next": []}
    for index in range(ctx.repeat):
        progress(f"partitions: sensor ticks, repetition {index + 1}/{ctx.repeat}")
        shutil.rmtree(inbox / "new", ignore_errors=True)
        with Timer() as timer:
            plain_listing(inbox)
        samples["floor"].append(timer.seconds)
        with stderr_to(ctx.log), Timer() as timer:
            first = sensor_tick(instance, inbox)
        samples["first"].append(timer.seconds)
        if first.dynamic_partitions_requests:
            raise RuntimeError("the first tick found files the instance did not know as partitions")
        add_new_files(inbox, NEW_FILES, files[0])
        with Timer() as timer:
            plain_listing(inbox)
        samples["floor+new"].append(timer.seconds)
        with stderr_to(ctx.log), Timer() as timer:
            second = sensor_tick(instance, inbox, first.cursor)
        samples["next"].append(timer.seconds)
        added = [key for request in second.dynamic_partitions_requests or [] for key in request.partition_keys or []]
        if len(added) != NEW_FILES:
            raise RuntimeError(f"the next tick registered {len(added)} new partitions, not {NEW_FILES}")
    shutil.rmtree(inbox / "new", ignore_errors=True)
    return samples


def ui_queries(deployment: Deployment, partitions: int, repeat: int) -> dict[str, list[float]]:
    """The asset page's partition status and the catalog's partition stats; the first of each is cold."""
    graphql = DagsterGraphQL(deployment.graphql.base_url, timeout_s=UI_TIMEOUT_S)
    key = {"path": list(NAMES.key(STATUS_FAMILY).path)}
    samples: dict[str, list[float]] = {"health first": [], "health": [], "stats first": [], "stats": []}
    for index in range(repeat + 1):
        with Timer() as timer:
            node = graphql(PARTITION_HEALTH_QUERY, {"assetKey": key})["assetNodeOrError"]
        samples["health first" if index == 0 else "health"].append(timer.seconds)
        (dimension,) = node["partitionKeysByDimension"]
        materialized = node["assetPartitionStatuses"]["materializedPartitions"]
        if len(dimension["partitionKeys"]) != partitions or len(materialized) != partitions:
            raise RuntimeError(
                f"PartitionHealthQuery: {len(dimension['partitionKeys'])} partitions, {len(materialized)} "
                f"materialized; expected {partitions} of each"
            )
        with Timer() as timer:
            (stats,) = graphql(PARTITION_STATS_QUERY, {"keys": [key]})["assetNodes"]
        samples["stats first" if index == 0 else "stats"].append(timer.seconds)
        if stats["partitionStats"]["numMaterialized"] != partitions:
            raise RuntimeError(f"partitionStats: {stats['partitionStats']}, expected {partitions} materialized")
    return samples


def enqueue_all(
    deployment: Deployment, instance: DagsterInstance, partitions: int, per_run: int, event_batch: int | None
) -> dict[str, Any]:
    """Backfill all, then wait for its last run to be queued (or the budget), and cancel it."""
    expected = math.ceil(partitions / per_run)
    families = [family.name for family in FAMILIES]
    launched = time.time()
    backfill_id = launch_asset_backfill(deployment.graphql, families, None, f"backfill all, {per_run} per run")
    launch_s = time.time() - launched
    queued = RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=[DagsterRunStatus.QUEUED])
    deadline = time.monotonic() + ENQUEUE_BUDGET_S
    while instance.get_runs_count(queued) < expected and time.monotonic() < deadline:
        deployment.ensure_running()
        time.sleep(0.5)
    cancel_backfill(deployment.graphql, backfill_id)
    records = list(instance.get_run_records(queued))
    # A run is created NOT_STARTED, then submitted to the queue: its last update is the moment it was queued.
    created = sorted(record.update_timestamp.timestamp() - launched for record in records) or [ENQUEUE_BUDGET_S]
    complete = len(records) >= expected
    # Not one run queued within the budget: the budget is a lower bound, and the row says so.
    seconds = created[-1] if complete or not records else created[-1] * expected / len(records)
    return {"backfill_id": backfill_id, "per_run": per_run, "event_batch_size": event_batch,
            "runs_expected": expected, "runs_queued": len(records),
            "complete": complete, "seconds": seconds, "launch_mutation_s": launch_s,
            "first_run_queued_s": created[0], "last_run_queued_s": created[-1]}  # fmt: skip


def run(ctx: Context, partitions: int) -> list[Row]:
    root = ctx.scratch / "partitions"
    inbox, quiet_inbox = root / "inbox", root / "quiet-inbox"
    quiet_inbox.mkdir(parents=True)
    progress(f"partitions: writing an inbox of {partitions} tiny processed videos")
    files = build_wide_inbox(inbox, partitions)
    keys = partition_keys(inbox, files)
    details: dict[str, Any] = {"partitions": partitions}
    with production_database() as database:
        home = write_home(root / "home", {("concurrency", "runs", "max_concurrent_runs"): 0})
        with production_instance(home) as instance:
            progress(f"partitions: registering {partitions} partitions, {REGISTER_CHUNK} per call")
            with Timer() as timer:
                register(instance, keys)
            details["register_s"] = timer.seconds
            progress(f"partitions: a materialization of {STATUS_FAMILY} for each, {EVENT_BATCH} events per batch")
            with Timer() as timer:
                record_materializations(instance, STATUS_FAMILY, keys)
            details["materializations_s"] = timer.seconds
            ticks = sensor_ticks(ctx, instance, inbox, files)
            discover_s = []
            for index in range(ctx.repeat):
                progress(f"partitions: clip-assets discover, repetition {index + 1}/{ctx.repeat}")
                discover_s.append(discover_process(home, database, inbox, partitions))
            ui: dict[str, list[float]] = {}
            backfills: list[dict[str, Any]] = []
            for per_run, event_batch in PER_RUN_CHOICES:
                if per_run > partitions and backfills:
                    continue
                progress(f"partitions: deployment with partitions_per_run {per_run}")
                env = {INBOX_VAR: str(quiet_inbox), OUTPUT_VAR: str(root / "output"), INPUT_PATH_VAR: INPUT_PATH,
                       PARTITIONS_PER_RUN_VAR: str(per_run),
                       **({EVENT_BATCH_VAR: str(event_batch)} if event_batch else {})}  # fmt: skip
                with quiet_deployment(home, database, env, root / "logs") as deployment:
                    if not ui:
                        progress("partitions: the UI's partition status queries")
                        ui = ui_queries(deployment, partitions, ctx.repeat)
                    progress(f"partitions: backfill all, {per_run} partitions per run")
                    backfills.append(enqueue_all(deployment, instance, partitions, per_run, event_batch))
                # With the daemon stopped (it may still be submitting when the cancel arrives): the next
                # choice starts from an empty queue.
                for record in instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfills[-1]["backfill_id"]})):
                    instance.delete_run(record.dagster_run.run_id)
    shutil.rmtree(root, ignore_errors=True)
    details["backfills"] = backfills
    workload = f"{partitions} partitions (PostgreSQL)"
    plus = f"{partitions} + {NEW_FILES} new files"
    floor1, floor2 = ticks["floor"], ticks["floor+new"]
    rows = [
        Row("partitions", workload, "floor: plain listing (os.walk + stat)", "s", floor1, "itself", floor1,
            [1.0] * len(floor1)),
        Row("partitions", workload, "sensor, first tick (no cursor)", "s", ticks["first"], "plain listing", floor1,
            paired_ratios(ticks["first"], floor1), details=details),
        Row("partitions", plus, "sensor, next tick (cursor)", "s", ticks["next"], "plain listing", floor2,
            paired_ratios(ticks["next"], floor2)),
        Row("partitions", plus, "sensor: next tick / first tick", "s", ticks["next"], "first tick", ticks["first"],
            paired_ratios(ticks["next"], ticks["first"]), ratio_label="x first tick", target=INCREMENTAL),
        Row("partitions", workload, "clip-assets discover (a process; all known, no cursor)", "s", discover_s,
            "plain listing", floor1, paired_ratios(discover_s, floor1)),
    ]  # fmt: skip
    for name, label in (("health", "UI partition status (PartitionHealthQuery)"), ("stats", "UI partitionStats")):
        for suffix, when in ((" first", "first query"), ("", "repeated")):
            values = ui[name + suffix]
            rows.append(Row("partitions", workload, f"{label} of {STATUS_FAMILY}, {when}", "s", values, "itself",
                            values, [1.0] * len(values), target=UI_TARGET))  # fmt: skip
    best = min(backfill["seconds"] for backfill in backfills)
    for backfill in backfills:
        how = "" if backfill["complete"] else (
            f"; projected from {backfill['runs_queued']} queued in {ENQUEUE_BUDGET_S:.0f} s" if backfill["runs_queued"]
            else f"; none queued in {ENQUEUE_BUDGET_S:.0f} s: a lower bound")  # fmt: skip
        batched = f", DAGSTER_EVENT_BATCH_SIZE={backfill['event_batch_size']}" if backfill["event_batch_size"] else ""
        measurement = (f"backfill all -> every run queued: {backfill['per_run']} per run{batched}, "
                       f"{backfill['runs_expected']} runs{how}")  # fmt: skip
        rows.append(Row("partitions", workload, measurement, "s", [backfill["seconds"]], "fastest choice", [best],
                        [backfill["seconds"] / best], ratio_label="x fastest", details=backfill))  # fmt: skip
    return rows
