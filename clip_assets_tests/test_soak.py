"""Soak: dozens of partitions written to S3 by concurrent runs of a real deployment while random faults
hit it (S3 5xx bursts, connection resets, an S3 outage, a run worker SIGKILLed mid-write, a PostgreSQL
restart); then everything is re-run to completion (the daemon's retries, a backfill of what failed) and
the output tree, the manifests and Dagster's record must equal a clean run's: nothing lost, nothing
stale, nothing duplicated.

The faults are drawn from a seed (CLIP_ASSETS_SOAK_SEED, fixed by default; a failure names it) and fire
as the work progresses (support/soak.py); every wait is bounded and says what it waited for and what
the runs were doing.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRecord,
    instance_for_test,
    materialize,
)
from dagster_postgres.utils import DagsterPostgresException  # not exported by the package itself

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG, video_partitions
from clip_assets.components.resources import S3ConnectionResource, WriterSettingsResource
from clip_assets.engine.manifest import PartitionManifest
from clip_assets.engine.output_version import code_digest
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets_tests.support.dataset import (
    FAMILY_ASSETS,
    PARTITIONS_NAME,
    build_resources,
    is_derived,
    processed_videos,
)
from clip_assets_tests.support.deployment import (
    LOCAL_INSTANCE,
    Deployment,
    fresh_database,
    load_yaml,
    restart_postgres,
    running_deployment,
    with_overrides,
)
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.graphql import BACKFILL_DONE, backfill_state, launch_asset_backfill
from clip_assets_tests.support.processes import descendants
from clip_assets_tests.support.reliability import Recorder
from clip_assets_tests.support.s3_endpoint import MotoServer, S3Endpoint
from clip_assets_tests.support.soak import (
    PG_RESTART,
    RUN_KILL,
    S3_5XX,
    S3_OUTAGE,
    S3_RESETS,
    SEED_VAR,
    PlannedFault,
    SoakFigures,
    delete_all,
    failure_cause,
    keys,
    objects,
    plan_faults,
    sha256s,
    tree_differences,
    unfinished_uploads,
)

DEFAULT_SEED = 20261201
PARTITIONS = [f"soak{i:02d}.mp4" for i in range(30)]
PER_RUN = 5  # 6 runs from the sensor's first tick
MAX_RUNS = 3
FAMILIES = sorted(family.name for family in OUTPUT_FAMILIES)
PREFIX = "soak"
# The shipped file with a smaller queue (several runs at once on a small machine) and quick monitoring,
# so a killed worker's run is failed, retried and its pool slot given back within seconds.
SOAK_SETTINGS: dict[tuple[str, ...], object] = {
    ("concurrency", "runs", "max_concurrent_runs"): MAX_RUNS,
    ("concurrency", "pools", "default_limit"): MAX_RUNS,
    ("run_monitoring", "poll_interval_seconds"): 2,
    ("run_monitoring", "free_slots_after_run_end_seconds"): 6,
}
# Bounds on each phase of a busy 2-core machine. The retry of the killed run waits for the dead
# worker's S3 lease to expire (TTL plus clock-skew margin, 150 s): that is most of the soak phase.
SOAK_PHASE_S = 420
BACKFILL_S = 240
# Metadata of a materialization that does not depend on the run that wrote it. Not: what was written or
# skipped, whether the input was unchanged, and what only a run that read the input reports (the
# builders' counts, row counts, descriptions): a retry finds a partition its killed run wrote unchanged.
STABLE_METADATA = ("source", "artifacts", "bytes", "manifest", "manifest_sha256", "warnings")
# Errors the test's own instance calls meet while PostgreSQL restarts (dagster-postgres gives up on a
# connection after a few quick retries): the next poll tries again.
DATABASE_DOWN = (sqlalchemy.exc.DBAPIError, DagsterPostgresException)


def source_video(key: str) -> str:
    return f"/videos/{key}"


def write_inputs(inbox: Path) -> None:
    """Small videos of 2 to 4 clips, one filtered in some: ~20 objects per partition."""
    for index, key in enumerate(PARTITIONS):
        clips = make_clips(2 + index % 3, source_video=source_video(key), filtered=[1] if index % 2 else [])
        write_video(inbox / f"{key}.parquet", clips, source_video=source_video(key))


def stable(metadata: dict[str, Any]) -> dict[str, Any]:
    return {name: metadata[name] for name in STABLE_METADATA}


def clean_run(inbox: Path, s3: S3Endpoint) -> dict[tuple[str, str], dict[str, Any]]:
    """Every partition in one fault-free in-process run into the soak's own output root; each (family,
    partition)'s stable materialization metadata."""
    with instance_for_test() as scratch:
        scratch.add_dynamic_partitions(PARTITIONS_NAME, PARTITIONS)
        result = materialize(
            [processed_videos, *FAMILY_ASSETS],  # type: ignore[list-item]  # Definitions.assets is a wide union
            instance=scratch,
            tags={RANGE_START_TAG: PARTITIONS[0], RANGE_END_TAG: PARTITIONS[-1]},
            resources=build_resources(
                str(inbox), s3.url(PREFIX), WriterSettingsResource(input_path="/videos"), s3.connection
            ),
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        recorded = {}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            assert materialization.partition is not None
            values = {name: value.value for name, value in materialization.metadata.items()}
            recorded[(materialization.asset_key.to_user_string(), materialization.partition)] = stable(values)
    assert set(recorded) == {(family, key) for family in FAMILIES for key in PARTITIONS}
    return recorded


# ---------------------------------------------------------------------------------------------------
# Runs as the instance records them


def partitions_of(run_tags: dict[str, str]) -> list[str]:
    if "dagster/partition" in run_tags:
        return [run_tags["dagster/partition"]]
    if RANGE_START_TAG in run_tags:
        start, end = PARTITIONS.index(run_tags[RANGE_START_TAG]), PARTITIONS.index(run_tags[RANGE_END_TAG])
        return PARTITIONS[start : end + 1]
    return []


def writing_runs(instance: DagsterInstance) -> list[RunRecord]:
    """Every run that writes partitions (the sensor's, their retries, the backfill's), oldest first."""
    records = instance.get_run_records(order_by="create_timestamp", ascending=True)
    return [r for r in records if partitions_of(dict(r.dagster_run.tags))]


def run_statuses(instance: DagsterInstance) -> str:
    """One line per run, for a failure message: what the runs were doing."""
    try:
        records = instance.get_run_records(order_by="create_timestamp", ascending=True)
    except DATABASE_DOWN as error:
        return f"(run storage unreachable: {error})"
    lines = []
    for record in records:
        run, tags = record.dagster_run, record.dagster_run.tags
        keys = partitions_of(dict(tags))
        span = f"{keys[0]}..{keys[-1]}" if keys else "-"
        parent = run.parent_run_id
        retry = f" retry {tags.get('dagster/retry_number')} of {parent[:8]}" if parent else ""
        lines.append(f"  {run.run_id[:8]} {run.job_name} [{span}] {run.status.value}{retry}")
    return "runs:\n" + "\n".join(lines)


def settled(instance: DagsterInstance) -> bool:
    """Every partition was requested, every writing run ended, and no retry is still to come."""
    records = writing_runs(instance)
    requested = {key for record in records for key in partitions_of(dict(record.dagster_run.tags))}
    return requested == set(PARTITIONS) and all(
        r.dagster_run.is_finished and not r.dagster_run.is_complete_and_waiting_to_retry for r in records
    )


def worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the run's "Started process for run (pid: N)" engine event."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data if event is not None else None
        if data is not None and "pid" in data.metadata:
            return int(str(data.metadata["pid"].value))
    return None


def failure_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    """Why a run failed: each failure event's message and its error's chain of causes (where a step's
    error names the object and the S3 error), and the engine's word on a killed worker."""
    messages = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not (event.is_failure or event.event_type == DagsterEventType.ENGINE_EVENT):
            continue
        messages.append(record.message)
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            messages.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return messages


# ---------------------------------------------------------------------------------------------------
# Firing the plan


class Injector:
    """Fires each planned fault once the proxy has forwarded its number of PutObject requests."""

    def __init__(
        self,
        plan: list[PlannedFault],
        s3: S3Endpoint,
        direct: Any,
        deployment: Deployment,
        instance: DagsterInstance,
        figures: SoakFigures,
    ) -> None:
        self.pending = list(plan)
        self.s3 = s3
        self.direct = direct
        self.deployment = deployment
        self.instance = instance
        self.figures = figures

    def step(self) -> None:
        puts = self.s3.proxy.counts["PutObject"]
        for fault in [f for f in self.pending if f.at_puts <= puts]:
            hit = self.fire(fault)
            if hit is not None:  # a kill waits for a run in the middle of a write
                self.pending.remove(fault)
                self.figures.fired.append((fault, hit))
                print(f"[soak] at {puts} PUTs: {fault.describe()}: {hit}", flush=True)

    def fire(self, fault: PlannedFault) -> str | None:
        proxy = self.s3.proxy
        if fault.kind == S3_5XX:
            proxy.inject(*fault.operations, count=fault.count, status=fault.status, code=fault.code)
            return f"{fault.count} requests"
        if fault.kind == S3_RESETS:
            proxy.inject(*fault.operations, count=fault.count, reset=True)
            return f"{fault.count} requests"
        if fault.kind == S3_OUTAGE:
            proxy.go_down(fault.seconds)
            return f"{fault.seconds:.1f} s"
        if fault.kind == RUN_KILL:
            return self.kill_a_writing_run()
        if fault.kind == PG_RESTART:
            return f"restarted in {restart_postgres():.1f} s"
        raise AssertionError(f"unknown fault {fault.kind}")

    def kill_a_writing_run(self) -> str | None:
        """SIGKILL the worker of a run that holds a partition's lease right now (mid-write), if any.

        The lease objects are read from the S3 server itself; the pid comes from the run's own event,
        and must be a process the code server started (a recycled pid is never signalled).
        """
        leases = set(keys(self.direct, self.s3.bucket, f"{PREFIX}/", layout.LOCKS))
        code_server = self.deployment.process("code-server").pid
        for record in writing_runs(self.instance):
            run = record.dagster_run
            if run.status != DagsterRunStatus.STARTED:
                continue
            held = [key for key in partitions_of(dict(run.tags)) if layout.lock_key(key) in leases]
            pid = worker_pid(self.instance, run.run_id)
            if held and pid is not None and pid in descendants(code_server):
                os.kill(pid, signal.SIGKILL)
                return f"run {run.run_id[:8]} (pid {pid}) while writing {held[0]}"
        return None


@contextmanager
def seed_named_on_failure(seed: int) -> Iterator[None]:
    try:
        yield
    except BaseException as failure:
        failure.add_note(f"soak seed {seed}: reproduce with {SEED_VAR}={seed}")
        print(f"soak seed {seed}: reproduce with {SEED_VAR}={seed}")
        raise


# ---------------------------------------------------------------------------------------------------
# The test


# Inputs, the clean run and the deployment's start take about 2 minutes; the soak phase and the backfill
# have bounds of their own, so a wait that runs out explains itself before the timeout cuts it short.
@pytest.mark.timeout(120 + SOAK_PHASE_S + BACKFILL_S)
def test_soak_random_faults_lose_nothing(
    tmp_path: Path,
    s3: S3Endpoint,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    reliability: Recorder,
) -> None:
    seed = int(os.environ.get(SEED_VAR, DEFAULT_SEED))
    print(f"soak seed {seed}")
    with seed_named_on_failure(seed):
        figures = soak(seed, tmp_path, s3, moto_server, monkeypatch)
    print("\n".join(f"{name}: {value}" for name, value in figures.rows()))
    nothing_lost = (
        "re-run to completion, every key and its bytes, every manifest and the latest materialization of "
        "every (family, partition) equal a clean run's; no orphan key, lease or unfinished upload"
    )
    for kind, fired in sorted(figures.fired_by_kind().items()):
        reliability.record("fault", f"soak: {kind}", tried=fired, handled=fired, nothing_lost=nothing_lost)
    reliability.record_soak(figures.rows())


def soak(
    seed: int, tmp_path: Path, s3: S3Endpoint, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> SoakFigures:
    t0 = time.monotonic()
    figures = SoakFigures(seed, len(PARTITIONS), [])
    source_digest = code_digest.__wrapped__()  # output_version covers the package's source
    inbox, logs = tmp_path / "inbox", tmp_path / "logs"
    logs.mkdir()
    write_inputs(inbox)
    # The server itself, not the proxy: what the harness reads never meets (nor uses up) a fault.
    direct = S3ConnectionResource(endpoint_url=moto_server.url, addressing_style="path").get_client()

    # The clean run, into the very root the deployment writes to (metas name it in clip_location).
    reference_metadata = clean_run(inbox, s3)
    clean = objects(direct, s3.bucket, f"{PREFIX}/")
    expected_puts = s3.proxy.counts["PutObject"]
    assert delete_all(direct, s3.bucket, f"{PREFIX}/") == len(clean)
    s3.proxy.reset_counts()
    figures.planned = plan_faults(random.Random(seed), expected_puts)
    print(f"clean run: {len(clean)} objects, {expected_puts} PUTs; plan:")
    print("\n".join(f"  at {f.at_puts} PUTs: {f.describe()}" for f in figures.planned))
    figures.wall_s["inputs and clean run"] = time.monotonic() - t0

    with fresh_database("clip_assets_soak") as database:
        for name, value in database.env.items():
            monkeypatch.setenv(name, value)
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(with_overrides(load_yaml(LOCAL_INSTANCE), SOAK_SETTINGS)))
        env = {
            **database.env,
            "CLIP_ASSETS_INBOX": str(inbox),
            "CLIP_ASSETS_OUTPUT": s3.url(PREFIX),
            "CLIP_ASSETS_INPUT_PATH": "/videos",
            "CLIP_ASSETS_SENSOR_INTERVAL_S": "5",
            "CLIP_ASSETS_PARTITIONS_PER_RUN": str(PER_RUN),
            "AWS_ENDPOINT_URL_S3": s3.proxy.url,
            "CLIP_ASSETS_S3_ADDRESSING_STYLE": "path",
        }
        t = time.monotonic()
        with running_deployment(home, env, logs) as deployment, DagsterInstance.from_config(str(home)) as instance:
            figures.wall_s["deployment up"] = time.monotonic() - t
            try:
                run_soak(deployment, instance, s3, direct, figures)
                verify(instance, s3, direct, clean, reference_metadata, source_digest)
            except BaseException:
                print(deployment.logs(60))
                print("\n".join(f"{name}: {value}" for name, value in figures.rows()))
                raise
    figures.wall_s["whole test"] = time.monotonic() - t0
    return figures


def run_soak(
    deployment: Deployment, instance: DagsterInstance, s3: S3Endpoint, direct: Any, figures: SoakFigures
) -> None:
    """The sensor's runs under the planned faults until they settle, then a backfill of what failed."""
    injector = Injector(figures.planned, s3, direct, deployment, instance, figures)

    def faults_fired_and_runs_settled() -> bool:
        injector.step()
        return not injector.pending and settled(instance)

    t = time.monotonic()
    deployment.wait(
        faults_fired_and_runs_settled,
        SOAK_PHASE_S,
        "every planned fault to fire and every run of the sensor (and its retries) to end",
        interval_s=0.2,
        retry_on=DATABASE_DOWN,
        context=lambda: f"not yet fired: {[f.describe() for f in injector.pending]}\n{run_statuses(instance)}",
    )
    figures.wall_s["faulty phase"] = time.monotonic() - t
    figures.requests_hit.update(s3.proxy.injected)

    records = writing_runs(instance)
    for record in records:
        run = record.dagster_run
        if run.status == DagsterRunStatus.FAILURE:
            messages = failure_messages(instance, run.run_id)
            cause = failure_cause(messages)
            assert cause is not None, f"run {run.run_id} failed, and not from an injected fault: {messages}"
            figures.runs_failed[cause] += 1
    figures.runs_retried = sum(1 for r in records if r.dagster_run.parent_run_id)
    assert figures.fired_by_kind()[RUN_KILL] == 1 and figures.runs_failed[RUN_KILL] >= 1, figures.runs_failed

    # What failed, as Dagster records it, is materialized again by a backfill (the UI's "failed and missing").
    t = time.monotonic()
    partitions_def = video_partitions(PARTITIONS_NAME)
    rerun: set[str] = set()
    for family in FAMILIES:
        status = instance.get_status_by_partition(AssetKey(family), PARTITIONS, partitions_def) or {}
        rerun.update(key for key in PARTITIONS if status.get(key) != AssetPartitionStatus.MATERIALIZED)
    figures.partitions_rerun = len(rerun)
    if rerun:
        backfill_id = launch_asset_backfill(deployment.graphql, FAMILIES, sorted(rerun), "soak: failed partitions")
        state = deployment.wait(
            lambda: backfill_finished(deployment, backfill_id),
            BACKFILL_S,
            f"the backfill of {len(rerun)} failed partitions to complete",
            context=lambda: run_statuses(instance),
        )
        failed = [run["runId"] for run in state["runs"] if run["status"] != "SUCCESS"]
        details = {run_id: failure_messages(instance, run_id) for run_id in failed}
        assert state["status"] == "COMPLETED_SUCCESS" and not failed, f"{state['status']}: {details}"
        figures.backfill_runs = len(state["runs"])
    figures.wall_s["final backfill"] = time.monotonic() - t
    figures.runs = len(writing_runs(instance))


def backfill_finished(deployment: Deployment, backfill_id: str) -> dict[str, Any] | None:
    state = backfill_state(deployment.graphql, backfill_id)
    done = state["status"] in BACKFILL_DONE and all(r["status"] in FINISHED for r in state["runs"])
    return state if done else None


FINISHED = {DagsterRunStatus.SUCCESS.value, DagsterRunStatus.FAILURE.value, DagsterRunStatus.CANCELED.value}


def verify(
    instance: DagsterInstance,
    s3: S3Endpoint,
    direct: Any,
    clean: dict[str, bytes],
    reference_metadata: dict[tuple[str, str], dict[str, Any]],
    source_digest: str,
) -> None:
    """The tree, the manifests and Dagster's record equal the clean run's."""
    edited = code_digest.__wrapped__() != source_digest
    why = " (clip_assets/ was edited while the test ran; output_version covers its source)" if edited else ""
    # The dataset-level outputs (summary, clip index, vectors, shards, gallery) are written by the
    # daemon's automation whenever it runs, with names of their own (Lance's): the families' tree is compared.
    tree = {k: v for k, v in objects(direct, s3.bucket, f"{PREFIX}/").items() if not is_derived(k)}
    expected = {k: v for k, v in clean.items() if not is_derived(k)}

    # Every key and its bytes: nothing lost, nothing stale, no orphan, no lease or temp left behind.
    differences = tree_differences(sha256s(tree), sha256s(expected))
    # Bookkeeping (manifests, intents, leases, failure records) is small JSON: show both versions.
    shown = [*differences["extra"], *differences["different bytes"]]
    versions = "".join(
        f"\n{key}:\n  soak:  {tree[key][:600]!r}\n  clean: {expected.get(key, b'(none)')[:600]!r}"
        for key in shown
        if key.startswith(layout.INTERNAL_PREFIX + "/")
    )
    assert differences == {"missing": [], "extra": [], "different bytes": []}, f"{differences}{why}{versions}"
    assert unfinished_uploads(direct, s3.bucket, f"{PREFIX}/") == []

    # The manifests record exactly the NeMo tree, each entry with the bytes stored.
    recorded: dict[str, str] = {}
    manifests = {}
    for key, data in tree.items():
        if key.startswith(layout.MANIFESTS):
            manifest = PartitionManifest.from_bytes(data)
            manifests[(manifest.family, manifest.partition_key)] = manifest
            for artifact, entry in manifest.entries.items():
                recorded[artifact] = entry.sha256
    assert set(manifests) == {(family, key) for family in FAMILIES for key in PARTITIONS}
    nemo = sha256s({k: v for k, v in tree.items() if not k.startswith(layout.INTERNAL_PREFIX + "/")})
    assert recorded == nemo, tree_differences(recorded, nemo)

    # Dagster's record: each (family, partition)'s latest materialization is the clean run's, it names
    # the manifest now stored, and no run recorded one twice.
    partitions_def = video_partitions(PARTITIONS_NAME)
    assert sorted(instance.get_dynamic_partitions(PARTITIONS_NAME)) == PARTITIONS
    for family in FAMILIES:
        status = instance.get_status_by_partition(AssetKey(family), PARTITIONS, partitions_def) or {}
        assert set(status.values()) == {AssetPartitionStatus.MATERIALIZED} and len(status) == len(PARTITIONS), status
        for key in PARTITIONS:
            filter_ = AssetRecordsFilter(asset_key=AssetKey(family), asset_partitions=[key])
            history = instance.fetch_materializations(filter_, limit=100, ascending=False).records
            runs = [record.run_id for record in history]
            assert history and len(runs) == len(set(runs)), (family, key, runs)
            materialization = history[0].asset_materialization
            assert materialization is not None
            values = stable({name: value.value for name, value in materialization.metadata.items()})
            assert values == reference_metadata[(family, key)], (family, key, why)
            assert values["manifest_sha256"] == manifests[(family, key)].digest, (family, key)
    print(f"{len(tree)} objects identical to the clean run's, {len(manifests)} manifests, {len(recorded)} artifacts")


# ---------------------------------------------------------------------------------------------------
# The harness itself (quick)


def test_the_fault_plan_is_fixed_by_its_seed_and_has_every_kind() -> None:
    plan = plan_faults(random.Random(DEFAULT_SEED), 800)
    assert plan == plan_faults(random.Random(DEFAULT_SEED), 800)
    assert plan != plan_faults(random.Random(DEFAULT_SEED + 1), 800)
    kinds = [fault.kind for fault in plan]
    assert set(kinds) == {S3_5XX, S3_RESETS, S3_OUTAGE, RUN_KILL, PG_RESTART}
    assert kinds.count(RUN_KILL) == kinds.count(PG_RESTART) == kinds.count(S3_OUTAGE) == 1
    assert [fault.at_puts for fault in plan] == sorted(fault.at_puts for fault in plan)
    assert all(40 <= fault.at_puts <= 640 for fault in plan), plan  # within 5 % to 80 % of the work
    assert all(fault.count <= 6 for fault in plan)


def test_a_failed_runs_messages_name_the_fault_that_failed_it() -> None:
    assert failure_cause(["Run execution terminated by signal 9 (SIGKILL)."]) == RUN_KILL
    assert failure_cause(["psycopg2.OperationalError: server closed the connection unexpectedly"]) == PG_RESTART
    s3_error = "soak03.mp4: clip_files: StorageError: cannot write s3://b/soak/clips/x.mp4: SlowDown: injected"
    assert failure_cause(["PartitionsFailed: 1 of 5 partitions failed", s3_error]) is not None
    assert failure_cause(["OutputConflictError: s3://b/soak/clips/x.mp4 already holds other content"]) is None
    assert failure_cause(["KeyError: 'uuid'"]) is None
