"""The production instance (deploy/): every shipped dagster.yaml passes Dagster's own schema, and the
single-machine one runs a real deployment on PostgreSQL: code server, daemon and webserver as processes,
the sensor's runs queued within the limits, a run worker SIGKILLed mid-run retried to an output tree
identical to a clean run's."""

from __future__ import annotations

import importlib
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    DagsterRun,
    DagsterRunStatus,
    RunRecord,
    RunsFilter,
    instance_for_test,
)

# No public API validates an instance config file short of connecting to its storage and run launcher.
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from dagster_graphql import DagsterGraphQLClient

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.engine.output_version import code_digest
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets_tests.support.dataset import is_derived, materialize_partition
from clip_assets_tests.support.deployment import (
    DEPLOY,
    ECS_INSTANCE,
    INSTANCE_FILES,
    K8S_INSTANCE,
    LOCAL_INSTANCE,
    LOCATION_NAME,
    WRITE_POOL,
    Deployment,
    env_references,
    fresh_database,
    holders,
    load_yaml,
    manifest_without_fingerprints,
    max_overlap,
    partitions_of,
    running_deployment,
    tree_files,
    with_overrides,
)
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.processes import descendants

FAMILIES = sorted(family.name for family in OUTPUT_FAMILIES)
LAUNCHERS = {"local": "DefaultRunLauncher", "ecs": "EcsRunLauncher", "k8s": "K8sRunLauncher", "ray": "RayRunLauncher"}
# The one-machine instance runs its webserver and daemon from the project's environment, so its event
# log is clip-assets' batched one; on ECS and Kubernetes they run Dagster's own images; beside a Ray
# cluster they run the clip-assets image the worker nodes run too.
STORAGES = {
    "local": ("CompositeStorage", "CachedPostgresEventLogStorage"),
    "ray": ("CompositeStorage", "CachedPostgresEventLogStorage"),
    "ecs": ("DagsterPostgresStorage", "PostgresEventLogStorage"),
    "k8s": ("DagsterPostgresStorage", "PostgresEventLogStorage"),
}


# ---------------------------------------------------------------------------------------------------
# The shipped instance files against Dagster's schema


def placeholder_env(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set every variable the file reads, as a deployment would (a port must be a number)."""
    for name in env_references(load_yaml(path)):
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else f"value-of-{name.lower()}")


def configurable_classes(ref: InstanceRef) -> dict[str, ConfigurableClassData]:
    """Every module/class/config section of the instance, by role (run_launcher, storage, ...)."""
    return {
        name.removesuffix("_data"): value
        for name, value in ref._asdict().items()
        if name.endswith("_data") and isinstance(value, ConfigurableClassData)
    }


def validated(path: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The instance settings as Dagster validates them, and each configured class's processed config.

    Exactly what a webserver or daemon does when it loads the file, short of connecting anywhere: the
    instance schema (storage, concurrency, retries, monitoring), then every module/class/config section
    processed against that class's `config_type()`, environment variables resolved.
    """
    settings, _ = dagster_instance_config(str(path.parent), config_filename=path.name)
    ref = InstanceRef.from_dir(str(tmp_path), config_dir=str(path.parent), config_filename=path.name)
    processed = {}
    for role, data in configurable_classes(ref).items():
        cls = getattr(importlib.import_module(data.module_name), data.class_name)
        result = process_config(resolve_to_config_type(cls.config_type()), yaml.safe_load(data.config_yaml))
        assert result.success, f"{path}: {role} ({data.class_name}): {[e.message for e in result.errors or []]}"
        processed[role] = {"class": data.class_name, "config": result.value}
    return dict(settings), processed


@pytest.mark.parametrize("kind", sorted(INSTANCE_FILES))
def test_shipped_instance_file_passes_dagster_schema(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = INSTANCE_FILES[kind]
    placeholder_env(path, monkeypatch)
    settings, classes = validated(path, tmp_path)

    assert classes["run_launcher"]["class"] == LAUNCHERS[kind]
    assert classes["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert (classes["storage"]["class"], classes["event_storage"]["class"]) == STORAGES[kind]
    assert classes["run_storage"]["class"] == "PostgresRunStorage"
    assert classes["schedule_storage"]["class"] == "PostgresScheduleStorage"
    # Every connection parameter comes from the environment, none is written in the file.
    assert env_references(load_yaml(path)) >= {
        f"DAGSTER_PG_{p}" for p in ("USERNAME", "PASSWORD", "HOST", "DB", "PORT")
    }

    # The URL names a driver that is installed (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3).
    from dagster_postgres.utils import pg_url_from_config

    url = pg_url_from_config(classes["event_storage"]["config"])
    engine = sqlalchemy.create_engine(url)
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()

    # The queue is the `concurrency` section alone; the write pool and the per-partition run limit are set.
    assert "run_queue" not in settings
    runs, pools = settings["concurrency"]["runs"], settings["concurrency"]["pools"]
    assert runs["max_concurrent_runs"] >= 1 and pools["default_limit"] >= 1
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in runs[
        "tag_concurrency_limits"
    ]
    assert settings["run_retries"]["enabled"] and settings["run_retries"]["max_retries"] >= 1
    assert settings["run_monitoring"]["enabled"] and settings["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert settings["telemetry"] == {"enabled": False}


def test_schema_validation_catches_what_a_deployment_would_trip_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation above is Dagster's own: a conflicting queue, a misspelt launcher field, a missing variable."""
    for path in INSTANCE_FILES.values():
        placeholder_env(path, monkeypatch)

    def write(name: str, document: dict[str, Any]) -> Path:
        target = tmp_path / name
        target.write_text(yaml.safe_dump(document))
        return target

    both_queues = write("both.yaml", {**load_yaml(LOCAL_INSTANCE), "run_queue": {"max_concurrent_runs": 3}})
    with pytest.raises(DagsterInvalidConfigError, match="run_queue"):
        validated(both_queues, tmp_path)

    ecs = load_yaml(ECS_INSTANCE)
    ecs["run_launcher"]["config"]["container_nmae"] = "run"
    with pytest.raises(AssertionError, match="container_nmae"):
        validated(write("ecs.yaml", ecs), tmp_path)

    k8s = load_yaml(K8S_INSTANCE)
    del k8s["run_launcher"]["config"]["instance_config_map"]
    with pytest.raises(AssertionError, match="instance_config_map"):
        validated(write("k8s.yaml", k8s), tmp_path)

    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(AssertionError, match="DAGSTER_PG_HOST"):
        validated(LOCAL_INSTANCE, tmp_path)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_helm_values_configmap_and_image_agree_with_the_instance_files() -> None:
    """Helm is not available here to render the chart: these files must at least say the same thing."""
    import dagster
    import dagster_k8s

    values = load_yaml(DEPLOY / "k8s" / "values.yaml")
    instance = load_yaml(K8S_INSTANCE)
    concurrency = values["concurrency"]
    assert concurrency["enabled"]
    assert {snake(k): v for k, v in concurrency["pools"].items()} == instance["concurrency"]["pools"]
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued)  # one queue: `concurrency`
    coordinator = instance["run_coordinator"]["config"]
    assert {snake(k): v for k, v in queued.items()} == {
        k: coordinator[k] for k in ("dequeue_use_threads", "dequeue_num_workers")
    }
    daemon = values["dagsterDaemon"]
    assert {snake(k): v for k, v in daemon["runRetries"].items()} == instance["run_retries"]
    assert {snake(k): v for k, v in daemon["runMonitoring"].items()} == instance["run_monitoring"]
    assert values["runLauncher"]["type"] == instance["run_launcher"]["class"]
    assert values["telemetry"] == instance["telemetry"]

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert args[args.index("-m") + 1] == "clip_assets.definitions"
    assert args[args.index("--location-name") + 1] == LOCATION_NAME

    configmap = load_yaml(DEPLOY / "k8s" / "configmap.yaml")
    assert configmap["metadata"]["name"] in instance["run_launcher"]["config"]["env_config_maps"]
    needed = env_references(instance) - {"DAGSTER_PG_PASSWORD"}  # the password comes from the Secret
    assert needed <= set(configmap["data"]), needed - set(configmap["data"])
    assert {"CLIP_ASSETS_INBOX", "CLIP_ASSETS_OUTPUT"} <= set(configmap["data"])

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert f'"dagster-k8s=={dagster_k8s.__version__}"' in dockerfile
    assert '"clip_assets.definitions"' in dockerfile
    assert "version 1.13.27 to match" in (DEPLOY / "k8s" / "values.yaml").read_text()
    assert dagster.__version__ == "1.13.27"


# ---------------------------------------------------------------------------------------------------
# A real deployment on PostgreSQL

BATCH = [f"cam{i}.mp4" for i in range(5)]  # 5 new videos, 2 per run: 3 runs requested in one tick
BATCH_CLIPS = 300  # long enough that three unqueued runs would overlap
SLOW = ["long0.mp4", "long1.mp4"]  # one run over both, slow enough to be killed mid-way
SLOW_CLIPS = 500
MAX_RUNS = 2
POOL_LIMIT = 2
FREE_SLOTS_AFTER_S = 6
# Smaller limits than production, on the shipped file's own structure, so the queue binds; quick
# monitoring, so a killed worker's pool slot comes back within seconds (but not before it is seen held).
TEST_SETTINGS: dict[tuple[str, ...], object] = {
    ("concurrency", "runs", "max_concurrent_runs"): MAX_RUNS,
    ("concurrency", "pools", "default_limit"): POOL_LIMIT,
    ("run_monitoring", "poll_interval_seconds"): 2,
    ("run_monitoring", "free_slots_after_run_end_seconds"): FREE_SLOTS_AFTER_S,
}


def source_video(key: str) -> str:
    return f"/videos/{key}"


def write_inputs(inbox: Path, keys: list[str], clips: int) -> None:
    for key in keys:
        write_video(
            inbox / f"{key}.parquet", make_clips(clips, source_video=source_video(key)), source_video=source_video(key)
        )


def curate_records(instance: DagsterInstance) -> list[RunRecord]:
    return list(instance.get_run_records(RunsFilter(job_name="curate_videos")))


def succeeded_partitions(instance: DagsterInstance, order: list[str]) -> set[str]:
    done: set[str] = set()
    for record in curate_records(instance):
        if record.dagster_run.status == DagsterRunStatus.SUCCESS:
            done.update(partitions_of(dict(record.dagster_run.tags), order))
    return done


def retried_unchanged(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    """(family, partition) -> whether the run found it unchanged (its `input_unchanged` metadata)."""
    found = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition is not None
        key = (materialization.asset_key.to_user_string(), materialization.partition)
        found[key] = bool(materialization.metadata["input_unchanged"].value)
    return found


def kill_mid_run(deployment: Deployment, instance: DagsterInstance, run_id: str, output: Path) -> tuple[int, float]:
    """SIGKILL the process executing `run_id` while it writes its second partition, the first one done.

    The run worker is found as the code server's descendant that holds the second partition's write
    lock open (a kernel flock held only while that partition is written), so no other run's worker
    (the dataset summary's, say) can be mistaken for it; the first partition counts as done once its
    last family's manifest is recorded.
    """
    first_done = output / layout.manifest_key(FAMILIES[-1], SLOW[0])
    second_lock = {output.resolve() / layout.lock_key(SLOW[1])}
    code_server = deployment.process("code-server").pid
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        deployment.ensure_running()
        record = instance.get_run_record_by_id(run_id)
        assert record is not None
        if record.dagster_run.is_finished:
            raise AssertionError(
                f"run {run_id} finished ({record.dagster_run.status}) before it could be killed mid-way: "
                f"raise SLOW_CLIPS\n{deployment.logs()}"
            )
        if first_done.exists():
            writing = holders(second_lock, descendants(code_server))
            if writing:
                (pid,) = writing  # one run writes these partitions
                os.kill(pid, signal.SIGKILL)
                return pid, time.time()
        time.sleep(0.02)
    raise AssertionError(
        f"run {run_id} never wrote its first partition and locked the second in 90 s\n{deployment.logs()}"
    )


RUNS_QUERY = """
{ runsOrError { __typename ... on Runs { results { runId status jobName tags { key value } } } } }
"""
PARTITIONS_QUERY = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename ... on AssetNode {
    assetPartitionStatuses { __typename ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
} } }
"""


# A production instance on PostgreSQL with daemon, sensor, queue, a kill and a retry.
@pytest.mark.timeout(900)
# DagsterGraphQLClient's gql dependency warns about its own call style.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")
def test_production_instance_on_postgres_sensor_queue_kill_and_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    source_digest = code_digest.__wrapped__()  # output_version covers the package's source
    inbox, held, output, reference, logs = (tmp_path / n for n in ("inbox", "held", "output", "reference", "logs"))
    for folder in (inbox, held, logs):
        folder.mkdir()
    write_inputs(inbox, SLOW, SLOW_CLIPS)
    write_inputs(inbox, BATCH, BATCH_CLIPS)

    # The clean run: the same files through the same assets, in this process, into the very folder the
    # deployment writes to (metas name the output root in clip_location), then moved aside.
    with instance_for_test() as scratch:
        for key in [*BATCH, *SLOW]:
            assert materialize_partition(scratch, key, str(inbox), str(output)).success
    output.rename(reference)
    for key in SLOW:  # held back for the second phase; a rename keeps size and mtime, so the same version
        (inbox / f"{key}.parquet").rename(held / f"{key}.parquet")
    timings["inputs and clean reference run"] = time.monotonic() - t0

    with fresh_database() as database:
        for name, value in database.env.items():
            monkeypatch.setenv(name, value)
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(with_overrides(load_yaml(LOCAL_INSTANCE), TEST_SETTINGS)))
        env = {
            **database.env,
            "CLIP_ASSETS_INBOX": str(inbox),
            "CLIP_ASSETS_OUTPUT": str(output),
            "CLIP_ASSETS_INPUT_PATH": "/videos",
            "CLIP_ASSETS_SENSOR_INTERVAL_S": "5",
            "CLIP_ASSETS_PARTITIONS_PER_RUN": "2",
        }
        t = time.monotonic()
        with running_deployment(home, env, logs) as deployment, DagsterInstance.from_config(str(home)) as instance:
            timings["code server, daemon and webserver up"] = time.monotonic() - t
            try:
                run_phases(deployment, instance, output, reference, held, inbox, timings, source_digest)
            except BaseException:
                print(deployment.logs(120))
                raise
    timings["whole test"] = time.monotonic() - t0
    print("\n".join(f"{name}: {seconds:.1f} s" for name, seconds in timings.items()))


def run_phases(
    deployment: Deployment,
    instance: DagsterInstance,
    output: Path,
    reference: Path,
    held: Path,
    inbox: Path,
    timings: dict[str, float],
    source_digest: str,
) -> None:
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None and queue.max_concurrent_runs == MAX_RUNS

    # Phase 1: the sensor registers five videos and requests three runs at once; the queue runs them.
    t = time.monotonic()
    order = BATCH
    deployment.wait(
        lambda: not _fail_on_failed_run(instance, deployment) and succeeded_partitions(instance, order) >= set(BATCH),
        120,
        "the sensor's runs of the first five videos to succeed",
    )
    timings["phase 1: 5 videos, sensor to last run done"] = time.monotonic() - t
    first = curate_records(instance)
    assert all(r.dagster_run.tags.get("dagster/sensor_name") == "processed_video_sensor" for r in first)
    assert sorted(len(partitions_of(dict(r.dagster_run.tags), order)) for r in first) == [1, 2, 2]
    assert list(instance.get_dynamic_partitions("processed_videos")) == BATCH

    # Phase 2: two long videos arrive; their run is killed mid-way and retried by the daemon.
    for key in SLOW:
        (held / f"{key}.parquet").rename(inbox / f"{key}.parquet")
    order = [*BATCH, *SLOW]
    t = time.monotonic()
    slow_run = deployment.wait(
        lambda: started_run_from(instance, SLOW[0]), 90, "the run of the two long videos to start"
    )
    killed_pid, killed_at = kill_mid_run(deployment, instance, slow_run.run_id, output)
    timings["phase 2: new files to SIGKILL"] = time.monotonic() - t

    failed = deployment.wait(
        lambda: ended_as(instance, slow_run.run_id, DagsterRunStatus.FAILURE),
        30,
        f"the killed run {slow_run.run_id} (worker pid {killed_pid}) to be reported failed",
    )
    timings["SIGKILL to run marked failed"] = failed.end_time - killed_at
    # Dagster does not free the pool slot of a worker that died in a step: the run still holds it...
    slots = instance.event_log_storage.get_concurrency_info(WRITE_POOL).claimed_slots
    assert any(slot.run_id == failed.run_id for slot in slots), slots
    messages = [r.message for r in instance.all_logs(failed.run_id, of_type=DagsterEventType.ENGINE_EVENT)]
    assert any("terminated by signal 9 (SIGKILL)" in m for m in messages), messages

    retry = deployment.wait(
        lambda: None if _fail_on_failed_run(instance, deployment) else successful_child(instance, failed.run_id),
        120,
        f"the daemon's retry of {failed.run_id} to succeed",
    )
    timings["SIGKILL to retry succeeded"] = retry.end_time - killed_at
    assert retry.tags["dagster/retry_number"] == "1" and retry.tags["dagster/root_run_id"] == failed.run_id
    assert (retry.tags[RANGE_START_TAG], retry.tags[RANGE_END_TAG]) == (SLOW[0], SLOW[1])
    # From failure: the retry rewrote only what the killed run had not finished. The partition written
    # before the kill is found unchanged (nothing read or written), the interrupted one is written whole.
    unchanged = retried_unchanged(instance, retry.run_id)
    assert unchanged == {(family, key): key == SLOW[0] for family in FAMILIES for key in SLOW}, unchanged

    # ...until run monitoring gives it back (free_slots_after_run_end_seconds).
    deployment.wait(
        lambda: all(
            slot.run_id != failed.run_id
            for slot in instance.event_log_storage.get_concurrency_info(WRITE_POOL).claimed_slots
        ),
        30,
        "the killed run's clip_assets_writes slot to be freed",
    )
    assert instance.event_log_storage.get_concurrency_info(WRITE_POOL).slot_count == POOL_LIMIT

    # The queue kept to its limit: no instant had more than MAX_RUNS runs in progress.
    records = list(instance.get_run_records())
    assert all(r.dagster_run.is_finished for r in records if r.dagster_run.job_name == "curate_videos")
    spans = [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
    overlap = max_overlap(spans)
    origin = min(r.create_timestamp.timestamp() for r in records)
    for r in sorted(records, key=lambda r: r.create_timestamp):
        launched = instance.get_run_stats(r.dagster_run.run_id).launch_time or origin
        created = r.create_timestamp.timestamp()
        print(
            f"{r.dagster_run.job_name} {r.dagster_run.status.value}: created {created - origin:.1f}"
            f" launched {launched - origin:.1f} started {(r.start_time or origin) - origin:.1f}"
            f" ended {(r.end_time or origin) - origin:.1f} s"
        )
    print(f"{len(records)} runs, at most {overlap} at once")
    assert overlap <= MAX_RUNS

    # Every family of every video is materialized in the instance, and the webserver serves the same.
    for family in FAMILIES:
        assert instance.get_materialized_partitions(AssetKey(family)) >= set(order), family
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.webserver_port)
    assert client.get_run_status(retry.run_id) == DagsterRunStatus.SUCCESS
    assert client.get_run_status(failed.run_id) == DagsterRunStatus.FAILURE
    served = {r["runId"]: r for r in deployment.graphql(RUNS_QUERY)["runsOrError"]["results"]}
    for record in records:  # the webserver lists every run the instance holds, finished ones as they ended
        run = record.dagster_run
        assert run.run_id in served, run.run_id
        assert served[run.run_id]["jobName"] == run.job_name
        if run.is_finished:
            assert served[run.run_id]["status"] == run.status.value
    for family in FAMILIES:
        node = deployment.graphql(PARTITIONS_QUERY, {"key": {"path": [family]}})["assetNodeOrError"]
        statuses = node["assetPartitionStatuses"]
        assert set(statuses["materializedPartitions"]) == set(order), (family, statuses)
        assert statuses["failedPartitions"] == [], (family, statuses)

    compare_with_clean_run(output, reference, source_digest)


@dataclass(frozen=True)
class Ended:
    run_id: str
    end_time: float
    tags: Mapping[str, str]


def started_run_from(instance: DagsterInstance, range_start: str) -> DagsterRun | None:
    """The sensor's run over the key range starting at `range_start`, once it has started."""
    for record in curate_records(instance):
        run = record.dagster_run
        if run.tags.get(RANGE_START_TAG) == range_start and run.status == DagsterRunStatus.STARTED:
            return run
    return None


def ended_as(instance: DagsterInstance, run_id: str, status: DagsterRunStatus) -> Ended | None:
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.dagster_run.status != status or record.end_time is None:
        return None
    return Ended(run_id, record.end_time, record.dagster_run.tags)


def successful_child(instance: DagsterInstance, parent_run_id: str) -> Ended | None:
    """The run that re-executed `parent_run_id`, once it succeeded."""
    for run in instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": parent_run_id})):
        ended = ended_as(instance, run.run_id, DagsterRunStatus.SUCCESS)
        if ended:
            return ended
    return None


def _fail_on_failed_run(instance: DagsterInstance, deployment: Deployment) -> bool:
    """False; raises when a curate run failed with no retry coming: a failure now, not at the deadline."""
    for record in curate_records(instance):
        run = record.dagster_run
        if run.status != DagsterRunStatus.FAILURE or run.tags.get("dagster/will_retry") != "false":
            continue
        messages = [r.message for r in instance.all_logs(run.run_id) if r.dagster_event and r.dagster_event.is_failure]
        raise AssertionError(f"run {run.run_id} failed and will not be retried: {messages}\n{deployment.logs()}")
    return False


def compare_with_clean_run(output: Path, reference: Path, source_digest: str) -> None:
    """NeMo's tree byte for byte; manifests equal but for the objects' mtimes; nothing else but scratch."""
    deployed, clean = tree_files(output), tree_files(reference)
    # Not compared: what the dataset's automation derives from the tree whenever it runs (the summary, the
    # clip index and vectors, near-duplicates, shards, gallery, and their locks) and temp files a killed
    # writer may leave in staging (removed by a later writer once abandoned).
    derived = {k for k in {*deployed, *clean} if is_derived(k)}
    scratch = {k for k in deployed if k.startswith("_clip_assets/staging/")} | derived
    assert not any(k.startswith("_clip_assets/staging/") for k in clean)
    assert set(deployed) - scratch == set(clean) - derived
    differing = [
        key
        for key in sorted(set(clean) - derived)
        if not key.startswith("_clip_assets/") and deployed[key].read_bytes() != clean[key].read_bytes()
    ]
    assert differing == []
    manifests = [k for k in clean if k.startswith("_clip_assets/manifests/")]
    assert len(manifests) == len(FAMILIES) * (len(BATCH) + len(SLOW))
    edited = code_digest.__wrapped__() != source_digest
    why = ": clip_assets/ was edited while the test ran, and output_version covers its source" if edited else ""
    for key in manifests:
        assert manifest_without_fingerprints(deployed[key]) == manifest_without_fingerprints(clean[key]), key + why
    print(f"{len(set(clean)) - len(manifests)} files identical; scratch left by the kill: {sorted(scratch - derived)}")
