"""clip-assets on a real Ray cluster of local processes (support/ray_cluster.py: a head with no CPUs and two
worker nodes of one CPU, token auth): a run's partitions as Ray tasks spread over both nodes, a task's
worker killed mid-write, NeMo-style inputs written as the threaded path writes them, and a backfill
launched from the UI's GraphQL onto the cluster through deploy/ray's instance file (every run a Ray job,
its partitions Ray tasks), surviving a lost node.

One cluster serves the module (20-50 s to start on a busy 2-core machine, about 1.2 GB of memory): each
test leaves it as it found it, with every node alive (the backfill's killed node is started again).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import boto3
import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.contract import EmbeddingLayout, write_processed_video
from clip_assets.contract.errors import ProcessedVideoError
from clip_assets.contract.partition_keys import chunk_key
from clip_assets.dataset.clip_index import CLIP_ID, clip_rows
from clip_assets.dataset.tables import read_clip_index
from clip_assets.dataset.update import read_locked, read_partitions, read_partitions_on_ray
from clip_assets.engine.output_version import output_version
from clip_assets.engine.ray_tasks import RayBackendError, map_partitions, portable
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets.settings import WriterSettings
from clip_assets.storage import LocalStorage, StorageSpec
from clip_assets_tests.support.dataset import (
    FAMILY_ASSETS,
    PARTITIONS_NAME,
    build_resources,
    dataset_tables,
    is_derived,
    output_checks,
    processed_videos,
)
from clip_assets_tests.support.deployment import (
    LOCATION_NAME,
    RAY_INSTANCE,
    Deployment,
    fresh_database,
    holders,
    load_yaml,
    manifest_without_fingerprints,
    running_deployment,
    tree_files,
    with_overrides,
)
from clip_assets_tests.support.factories import make_clips, video_info, write_video
from clip_assets_tests.support.graphql import BACKFILL_DONE, backfill_state, launch_asset_backfill, stop_all_sensors
from clip_assets_tests.support.ray_cluster import HEAD_IP, WORKER_IPS, RayCluster, ray_cluster
from clip_assets_tests.support.s3_endpoint import ACCESS_KEY, SECRET_KEY, MotoServer

pytestmark = pytest.mark.timeout(900)

FAMILIES = sorted(family.name for family in OUTPUT_FAMILIES)
STAGING = layout.STAGING


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[RayCluster]:
    """The module's cluster, and this process connected to it as a run's process is (RAY_ADDRESS, auth).

    The nodes hold what a deployment's worker nodes hold in their own environment: PostgreSQL's password
    (empty: trust auth on loopback) and the S3 credentials (moto's, for the run logs).
    """
    nodes_env = {
        **os.environ,
        "DAGSTER_PG_PASSWORD": "",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_server.url,
    }
    # Ray reads RAY_AUTH_MODE once, when it is imported: this process must not have imported it before.
    assert "ray" not in sys.modules, "ray was imported before the cluster's auth mode was set in this process"
    with ray_cluster(tmp_path_factory.mktemp("ray"), base_env=nodes_env) as started:
        print(f"\nRay cluster of {len(started.nodes)} nodes up in {started.started_in_s:.1f} s")
        with pytest.MonkeyPatch.context() as patch:
            for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
                patch.setenv(name, started.env[name])
            try:
                yield started
            finally:
                import ray

                ray.shutdown()


def test_how_partitions_are_spread_is_not_part_of_what_they_hold():
    """The backend and a task's CPUs decide where a partition is written, not its bytes: a tree written
    with threads is unchanged for a run on Ray (and the other way round), nothing rewritten."""
    threads = WriterSettings()
    ray = WriterSettings(parallel_backend="ray", ray_cpus_per_partition=1.0)
    assert output_version("1:2", ray) == output_version("1:2", threads)
    assert output_version("1:2", WriterSettings(embedding_algorithm="internvideo2")) != output_version("1:2", threads)
    with pytest.raises(ValueError, match="parallel_backend must be one of threads, ray, got 'dask'"):
        WriterSettings(parallel_backend="dask")


def test_an_input_error_comes_back_from_a_task_as_itself():
    """A task's outcome crosses to the run's process pickled: a bad video's error keeps its type, file, row
    and field (the run's failure names them), not a stand-in."""
    error = ProcessedVideoError("/inbox/a.mp4.parquet", "span_end", "must come after span_start", row=3, clip_id="c")
    back = portable(error)
    assert type(back) is ProcessedVideoError and str(back) == str(error)
    assert (back.file, back.field, back.row, back.clip_id) == ("/inbox/a.mp4.parquet", "span_end", 3, "c")


def test_the_ray_backend_without_a_cluster_says_what_to_set(monkeypatch, tmp_path):
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        pytest.skip("this process is connected to a cluster already")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    storage = StorageSpec(str(tmp_path))
    with pytest.raises(RayBackendError, match="set RAY_ADDRESS to the cluster's address"):
        list(map_partitions(read_locked, storage, ["a.mp4"], 1))


def run_range(instance, inbox: Path, output: Path, keys: Sequence[str], **settings: object) -> ExecuteInProcessResult:
    """One run of the output families over `keys`, in this process, as a backfill's run is."""
    instance.add_dynamic_partitions(PARTITIONS_NAME, list(keys))
    writer_settings = WriterSettingsResource(input_path="/videos", **settings)
    return materialize(
        [processed_videos, *FAMILY_ASSETS],
        instance=instance,
        resources=build_resources(str(inbox), str(output), writer_settings),
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def materialization_counts(result: ExecuteInProcessResult) -> Counter[tuple[str, str]]:
    return Counter(
        (event.asset_key.to_user_string(), event.partition or "") for event in result.get_asset_materialization_events()
    )


def assert_same_tree(output: Path, reference: Path) -> None:
    """The same files byte for byte (NeMo's tree and clip-assets' records), manifests but for each object's
    mtime; a killed writer's temp files in staging are the only extra files allowed."""
    written, clean = tree_files(output), tree_files(reference)
    scratch = {key for key in written if key.startswith(STAGING)}
    assert not any(key.startswith(STAGING) for key in clean)
    assert set(written) - scratch == set(clean)
    manifests = {key for key in clean if key.startswith(layout.INTERNAL_PREFIX + "/manifests/")}
    assert manifests
    differing = [key for key in sorted(set(clean) - manifests) if written[key].read_bytes() != clean[key].read_bytes()]
    assert differing == []
    for key in manifests:
        assert manifest_without_fingerprints(written[key]) == manifest_without_fingerprints(clean[key]), key


def write_inputs(inbox: Path, keys: Sequence[str], clips: int) -> None:
    for key in keys:
        source = f"/videos/{key}"
        write_video(inbox / f"{key}.parquet", make_clips(clips, source_video=source), source_video=source)


def reference_tree(inbox: Path, output: Path, reference: Path, keys: Sequence[str]) -> None:
    """A clean run with the threaded backend into the folder the test writes to (metas name the output
    root), moved aside."""
    with instance_for_test() as scratch:
        assert run_range(scratch, inbox, output, keys, parallel_backend="threads").success
    output.rename(reference)


def ray_tasks(cluster: RayCluster) -> list[dict[str, object]]:
    """Every attempt of every partition task Ray recorded (its task events): node, worker, state."""
    from ray.util.state import list_tasks

    tasks = list_tasks(
        address=cluster.dashboard_url, filters=[("name", "=", "write_partition")], detail=True, limit=10_000
    )
    return [task.__dict__ for task in tasks]


class LockHolderKiller(threading.Thread):
    """SIGKILLs the first worker process of a worker node seen holding a partition's write lock: a task's
    worker killed mid-write (a kernel flock held only while a partition is written)."""

    def __init__(self, cluster: RayCluster, output: Path, keys: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.locks = {output.resolve() / layout.lock_key(key): key for key in keys}
        self.killed: tuple[int, str, str] | None = None  # pid, partition, node address
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for node in self.cluster.workers:
                for pid, paths in holders(self.locks, node.pids()).items():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (pid, self.locks[next(iter(paths))], node.ip)
                    return
            time.sleep(0.02)


def test_a_run_s_partitions_are_ray_tasks_on_both_nodes_and_survive_a_killed_worker(cluster, tmp_path):
    inbox, output, reference = tmp_path / "inbox", tmp_path / "output", tmp_path / "reference"
    inbox.mkdir()
    keys = [f"cam{i}.mp4" for i in range(8)]
    write_inputs(inbox, keys, clips=120)
    reference_tree(inbox, output, reference, keys)

    killer = LockHolderKiller(cluster, output, keys)
    killer.start()
    started = time.monotonic()
    with instance_for_test() as instance:
        result = run_range(instance, inbox, output, keys, parallel_backend="ray")
    killer.stop.set()
    print(f"\n8 partitions as Ray tasks, one worker killed: {time.monotonic() - started:.1f} s")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert killer.killed is not None, "no task's worker was seen writing a partition"
    killed_pid, killed_key, _ = killer.killed

    # One materialization per (family, partition), the killed partition's included.
    assert materialization_counts(result) == Counter({(family, key): 1 for family in FAMILIES for key in keys})

    # Ray's task events: the tasks ran on both worker nodes and never on the head; the killed worker's task
    # failed and was re-run.
    ips = cluster.node_id_ips()
    tasks = cluster.wait(
        lambda: (found := ray_tasks(cluster)) and sum(t["state"] == "FINISHED" for t in found) >= len(keys) and found,
        60,
        "Ray's task events of every partition's task",
    )
    nodes = {ips[t["node_id"]] for t in tasks if t["node_id"]}
    assert nodes == set(WORKER_IPS) and HEAD_IP not in nodes, nodes
    killed = [t for t in tasks if t["worker_pid"] == killed_pid]
    assert killed and all(t["state"] == "FAILED" for t in killed), killed
    assert any(
        t["attempt_number"] >= 1 and t["state"] == "FINISHED" for t in tasks if t["task_id"] == killed[0]["task_id"]
    )

    assert_same_tree(output, reference)
    print(f"killed pid {killed_pid} writing {killed_key}; tasks on {sorted(nodes)}")


def write_nemo_style_inputs(inbox: Path) -> list[str]:
    """What ProcessedVideoWriterStage hands over from a NeMo pipeline: a video in two chunk files (float16
    embeddings shaped (1, 8), a filtered clip, a name with a space and non-ASCII letters), a whole video
    with filtered clips, and a video with no clips."""
    chunked = "cam 1/straße café.mp4"
    clips = make_clips(6, source_video=f"/videos/{chunked}", filtered=[1, 4], clips_per_chunk=3)
    for clip in clips:
        clip.embeddings = {name: vector.astype("float16").reshape(1, -1) for name, vector in clip.embeddings.items()}
    info = video_info(f"/videos/{chunked}", num_clips=len(clips), num_chunks=2)
    info = dataclasses.replace(info, embedding_layouts={"cosmos-embed1": EmbeddingLayout("float16", (1, 8))})
    for index in range(2):
        rows = [clip for clip in clips if clip.chunk_index == index]
        chunk_info = dataclasses.replace(info, chunk_index=index)
        write_processed_video(inbox / chunk_key(f"{chunked}.parquet", index, 2), chunk_info, rows)
    whole = "short one.mp4"
    write_video(
        inbox / f"{whole}.parquet",
        make_clips(4, source_video=f"/videos/{whole}", filtered=[2]),
        source_video=f"/videos/{whole}",
    )
    empty = "empty.mp4"
    write_video(inbox / f"{empty}.parquet", [], video_info(f"/videos/{empty}", num_clips=0))
    return sorted([chunked, whole, empty])


def test_nemo_style_inputs_through_ray_tasks_equal_the_threaded_run_file_for_file(cluster, tmp_path):
    inbox, output, reference = tmp_path / "inbox", tmp_path / "output", tmp_path / "reference"
    inbox.mkdir()
    keys = write_nemo_style_inputs(inbox)
    reference_tree(inbox, output, reference, keys)
    with instance_for_test() as instance:
        result = run_range(instance, inbox, output, keys, parallel_backend="ray")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert materialization_counts(result) == Counter({(family, key): 1 for family in FAMILIES for key in keys})
    assert_same_tree(output, reference)
    written = tree_files(output)
    assert any(key.endswith(".pickle") for key in written) and any("straße café" in key for key in written)

    # The clip index and vectors of the run's partitions: each partition's outputs read by a Ray task, one
    # commit made from what the tasks returned; the same outputs as read in this process, and the
    # tables agree with the metadata documents (the `matches_outputs` check).
    on_ray = read_partitions_on_ray(StorageSpec(str(output)), keys, 0.5)
    here = read_partitions(LocalStorage(output), keys)
    assert list(on_ray) == list(here) == keys
    for key in keys:
        found, expected = on_ray[key], here[key]
        assert (found is None) == (expected is None), key
        if found is not None and expected is not None:
            assert clip_rows(found, None).equals(clip_rows(expected, None)), key
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, keys)
        tables = materialize(
            [processed_videos, *FAMILY_ASSETS, dataset_tables, *output_checks],
            selection=[dataset_tables],
            instance=instance,
            resources=build_resources(
                str(inbox), str(output), WriterSettingsResource(input_path="/videos", parallel_backend="ray")
            ),
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
            raise_on_error=False,
        )
    assert tables.success, [e.message for e in tables.all_events if e.is_failure]
    evaluations = {e.asset_check_key.name: e.passed for e in tables.get_asset_check_evaluations()}
    assert evaluations.get("matches_outputs") is True, evaluations
    index = read_clip_index(LocalStorage(output), [CLIP_ID])
    assert index.num_rows == sum(len(outputs.documents) for outputs in here.values() if outputs is not None) == 10


# ---------------------------------------------------------------------------------------------------
# A backfill from the UI onto the cluster, through deploy/ray/dagster.yaml. The test kills a node, then
# starts it again: the module's cluster stays whole for whatever runs after it.

VIDEOS = [f"v{i}.mp4" for i in range(1, 7)]  # 2 per run: 3 runs, 2 at once
CLIPS = 40
# The shipped file's structure, with monitoring quick enough for a test.
RAY_TEST_SETTINGS: dict[tuple[str, ...], object] = {
    ("run_monitoring", "poll_interval_seconds"): 2,
    ("run_monitoring", "start_timeout_seconds"): 90,
    ("run_monitoring", "free_slots_after_run_end_seconds"): 6,
}


def ray_job_nodes(cluster: RayCluster) -> dict[str, tuple[str, str]]:
    """Dagster run id -> (the Ray job's status, the address of the node its driver ran on), from Ray's job table."""
    ips = cluster.node_id_ips()
    found = {}
    for job in cluster.jobs():
        submission = job.get("submission_id") or ""
        if submission.startswith("dagster-run-"):
            found[submission.removeprefix("dagster-run-")] = (
                job["status"],
                ips.get(job.get("driver_node_id") or "", ""),
            )
    return found


def curate_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """The runs that write the families (the backfill's and their retries), not the dataset's automation's."""
    return [
        record.dagster_run
        for record in instance.get_run_records()
        if record.dagster_run.tags.get(RANGE_START_TAG)
        and AssetKey("clip_files") in (record.dagster_run.asset_selection or ())
    ]


def other_runs(instance: DagsterInstance) -> str:
    curate = {run.run_id for run in curate_runs(instance)}
    return "\n".join(
        f"other run {record.dagster_run.run_id[:8]} {record.dagster_run.job_name} {record.dagster_run.status.value} "
        f"{record.dagster_run.asset_selection} {dict(record.dagster_run.tags)}"
        for record in instance.get_run_records()
        if record.dagster_run.run_id not in curate
    )


def no_failure_without_retry(instance: DagsterInstance, deployment: Deployment) -> None:
    for run in curate_runs(instance):
        if run.status == DagsterRunStatus.FAILURE and run.tags.get("dagster/will_retry") == "false":
            raise AssertionError(f"run {run.run_id} failed and will not be retried\n{deployment.logs(80)}")


def unchanged_in(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    """(family, partition) -> whether the run found it unchanged (its `input_unchanged` metadata)."""
    found = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition is not None
        found[(materialization.asset_key.to_user_string(), materialization.partition)] = bool(
            materialization.metadata["input_unchanged"].value
        )
    return found


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_backfill_from_the_ui_runs_as_ray_jobs_on_the_workers_and_survives_a_lost_node(
    cluster, tmp_path, moto_server, monkeypatch
):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    inbox, output, reference, logs = (tmp_path / name for name in ("inbox", "output", "reference", "logs"))
    inbox.mkdir()
    logs.mkdir()
    keys = VIDEOS
    write_inputs(inbox, keys, CLIPS)
    reference_tree(inbox, output, reference, keys)
    # Out of the inbox until the sensors are stopped: the inbox sensor would request runs of its own at
    # its first tick. A rename keeps size and mtime, so the files' version is the reference run's.
    inbox.rename(held_inbox := tmp_path / "held")
    timings["inputs and clean in-process run"] = time.monotonic() - t0

    bucket = f"run-logs-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    aws = {name: cluster.env[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    aws["AWS_ENDPOINT_URL_S3"] = moto_server.url
    with fresh_database() as database:
        env = {
            **database.env,
            **aws,
            "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
            "RAY_ADDRESS": cluster.dashboard_url,  # the job API, as a deployment's webserver and daemon reach it
            "RAY_AUTH_MODE": cluster.env["RAY_AUTH_MODE"],
            "RAY_AUTH_TOKEN_PATH": cluster.env["RAY_AUTH_TOKEN_PATH"],
            "CLIP_ASSETS_INBOX": str(inbox),
            "CLIP_ASSETS_OUTPUT": str(output),
            "CLIP_ASSETS_INPUT_PATH": "/videos",
            "CLIP_ASSETS_PARTITIONS_PER_RUN": "2",
        }
        for name, value in env.items():
            if not name.startswith(("RAY_", "CLIP_ASSETS_")):
                monkeypatch.setenv(name, value)  # this process reads the same instance
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(with_overrides(load_yaml(RAY_INSTANCE), RAY_TEST_SETTINGS)))
        t = time.monotonic()
        with running_deployment(home, env, logs) as deployment, DagsterInstance.from_config(str(home)) as instance:
            timings["code server, daemon and webserver up"] = time.monotonic() - t
            try:
                stop_all_sensors(deployment.graphql, LOCATION_NAME)
                held_inbox.rename(inbox)
                backfill_on_the_cluster(cluster, deployment, instance, keys, output, timings)
            except BaseException:
                print(deployment.logs(120), cluster.logs(60))
                raise
            finally:
                t = time.monotonic()
                for node in list(cluster.lost):  # the module's cluster whole again
                    cluster.restart(node)
                timings["killed node started again"] = time.monotonic() - t
    assert_same_tree_but_derived(output, reference)

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="clip-assets/compute-logs/").get("KeyCount", 0)
    assert listed > 0, "no run's logs reached S3"
    timings["whole test"] = time.monotonic() - t0
    print("\n".join(f"{name}: {seconds:.1f} s" for name, seconds in timings.items()))


class HeldLocks:
    """Partitions' write locks held by the test: a run reaching one waits there until it is released (a
    writer waits up to an hour for a partition's lock), so the test decides when each run may finish."""

    def __init__(self, storage: LocalStorage, keys: Sequence[str]) -> None:
        self.held = {key: storage.lock(layout.lock_key(key), 5) for key in keys}
        for lock in self.held.values():
            lock.__enter__()

    def release(self, key: str) -> None:
        self.held.pop(key).__exit__(None, None, None)

    def __enter__(self) -> HeldLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        for key in list(self.held):
            self.release(key)


def backfill_on_the_cluster(
    cluster: RayCluster,
    deployment: Deployment,
    instance: DagsterInstance,
    keys: list[str],
    output: Path,
    timings: dict[str, float],
) -> None:
    assert type(instance.run_launcher).__name__ == "RayRunLauncher"
    instance.add_dynamic_partitions(PARTITIONS_NAME, keys)

    def runs_now() -> str:
        jobs = ray_job_nodes(cluster)
        return (
            "\n".join(
                f"run {run.run_id[:8]} {run.status.value} {run.tags.get(RANGE_START_TAG)}.."
                f"{run.tags.get(RANGE_END_TAG)}"
                f" parent {run.tags.get('dagster/parent_run_id', '-')[:8]} ray job {jobs.get(run.run_id)}"
                for run in curate_runs(instance)
            )
            + "\n"
            + other_runs(instance)
        )

    # Each run's second partition, held: the test decides when a run may finish.
    second_partitions = [key for index, key in enumerate(keys) if index % 2]
    with HeldLocks(LocalStorage(output), second_partitions) as held:
        t = time.monotonic()
        backfill_id = launch_asset_backfill(deployment.graphql, FAMILIES, keys, "onto the Ray cluster")

        def past_first_waiting_at_second(run: DagsterRun) -> bool:
            """The run's first partition is written and settled (its manifests there, its lock let go) and a
            task or process of a worker node waits for its second's lock, held here."""
            first, second = (
                output.resolve() / layout.lock_key(run.tags[tag]) for tag in (RANGE_START_TAG, RANGE_END_TAG)
            )
            if not (output / layout.manifest_key(FAMILIES[-1], run.tags[RANGE_START_TAG])).exists():
                return False
            pids = [pid for node in cluster.workers for pid in node.pids()]
            opened = set().union(*holders({first, second}, pids).values())
            return second in opened and first not in opened

        def started(exclude: Collection[str] = ()) -> list[DagsterRun]:
            """Runs started on the cluster, past their first partition and held at their second's lock."""
            no_failure_without_retry(instance, deployment)
            jobs = ray_job_nodes(cluster)
            return [
                run
                for run in curate_runs(instance)
                if run.status == DagsterRunStatus.STARTED
                and run.run_id in jobs
                and run.run_id not in exclude
                and past_first_waiting_at_second(run)
            ]

        # The first two runs, held at their second partition, then let go: they finish, one on each node.
        first_two = deployment.wait(
            lambda: (runs := started()) and len(runs) == 2 and runs, 240, "two runs to start", context=runs_now
        )
        for run in first_two:
            held.release(run.tags[RANGE_END_TAG])

        def finished_on_both_workers() -> bool:
            no_failure_without_retry(instance, deployment)
            jobs = ray_job_nodes(cluster)
            done = [run for run in curate_runs(instance) if run.status == DagsterRunStatus.SUCCESS]
            return {jobs[run.run_id][1] for run in done if run.run_id in jobs} == set(WORKER_IPS)

        deployment.wait(finished_on_both_workers, 240, "runs to have finished on both worker nodes", context=runs_now)
        timings["backfill launched to runs done on both workers"] = time.monotonic() - t

        # The third run, once it has written its first partition (and waits at its second): its node goes,
        # every process of it at once. Then its second partition is let go, for the retry.
        (last,) = deployment.wait(
            lambda: started(exclude={run.run_id for run in first_two}), 240, "the last run to start", context=runs_now
        )
        assert not other_runs(instance), other_runs(instance)
        written = [last.tags[RANGE_START_TAG], last.tags[RANGE_END_TAG]]
        node = cluster.node_of_ip(ray_job_nodes(cluster)[last.run_id][1])
        lost = cluster.kill(node)
        killed_at, killed_ip = time.monotonic(), node.ip
        status = instance.get_run_by_id(last.run_id).status
        assert status == DagsterRunStatus.STARTED, f"the last run ended ({status}) before its node was killed"
        held.release(written[1])

        def retried() -> DagsterRun | None:
            no_failure_without_retry(instance, deployment)
            for run in curate_runs(instance):
                if run.tags.get("dagster/parent_run_id") == last.run_id and run.status == DagsterRunStatus.SUCCESS:
                    return run
            return None

        retry = deployment.wait(
            retried, 240, f"the retry of {last.run_id}, whose node was killed, to succeed", context=runs_now
        )
        timings["node killed to retry succeeded"] = time.monotonic() - killed_at
        backfill = deployment.wait(
            lambda: (state := backfill_state(deployment.graphql, backfill_id))["status"] in BACKFILL_DONE and state,
            120,
            "the backfill to end",
            context=runs_now,
        )
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill

        # The killed run failed (Ray: its job FAILED) and was retried once, on the other node.
        assert instance.get_run_by_id(last.run_id).status == DagsterRunStatus.FAILURE
        retries = [run for run in curate_runs(instance) if run.tags.get("dagster/root_run_id") == last.run_id]
        assert [run.run_id for run in retries] == [retry.run_id]
        assert retry.tags["dagster/retry_number"] == "1"
        # Dagster has the retry's success from its events; Ray ends its job when the process exits, after.
        jobs = deployment.wait(
            lambda: (found := ray_job_nodes(cluster))[retry.run_id][0] not in ("PENDING", "RUNNING") and found,
            60,
            "the retry's Ray job to end",
            context=runs_now,
        )
        assert jobs[last.run_id] == ("FAILED", killed_ip), jobs[last.run_id]
        (other_ip,) = set(WORKER_IPS) - {killed_ip}
        assert jobs[retry.run_id] == ("SUCCEEDED", other_ip), jobs[retry.run_id]
        # Ray's job table: every run a job on a worker node, both of them, none on the head.
        runs = curate_runs(instance)
        assert {jobs[run.run_id][1] for run in runs} == set(WORKER_IPS), jobs
        assert all(jobs[run.run_id][1] != HEAD_IP for run in runs)
        # Each successful run wrote its two partitions as Ray tasks (Ray's task events, by the runs' jobs;
        # those of the killed node's tasks may be lost with it), none on the head.
        succeeded = {run.run_id for run in runs if run.status == DagsterRunStatus.SUCCESS}
        job_runs = {
            job["job_id"]: (job.get("submission_id") or "").removeprefix("dagster-run-") for job in cluster.jobs()
        }
        ips = cluster.node_id_ips()

        def finished_tasks() -> Counter[str] | None:
            tasks = [t for t in ray_tasks(cluster) if job_runs.get(t["job_id"]) in succeeded]
            on_head = [t["task_id"] for t in tasks if t["node_id"] and ips.get(t["node_id"]) == HEAD_IP]
            assert not on_head, on_head
            done = Counter(job_runs[t["job_id"]] for t in tasks if t["state"] == "FINISHED")
            return done if all(done[run_id] >= 2 for run_id in succeeded) else None

        cluster.wait(
            finished_tasks,
            60,
            "Ray's task events of the successful runs' partition tasks",
            context=lambda: (
                f"jobs {job_runs}\ntasks {[(t['job_id'], t['node_id'], t['state']) for t in ray_tasks(cluster)]}"
            ),
        )
        # From failure: the partition written before the kill is found unchanged, the interrupted one written.
        expected = {(family, key): key == written[0] for family in FAMILIES for key in written}
        assert unchanged_in(instance, retry.run_id) == expected

        # Every family of every video is materialized, and every `intact` check the backfill ran passed.
        for family in FAMILIES:
            assert instance.get_materialized_partitions(AssetKey(family)) >= set(keys), family
        # Each run's checks: the two first runs', the retry's; the killed run's were planned, never run.
        evaluated: Counter[str] = Counter()
        for family in FAMILIES:
            for record in instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey(family), "intact"), limit=100
            ):
                if record.run_id == last.run_id:
                    continue
                evaluation = record.event.dagster_event.event_specific_data if record.event else None
                assert record.status.value == "SUCCEEDED" and evaluation is not None and evaluation.passed, record
                evaluated[family] += 1
        assert evaluated == Counter({family: 3 for family in FAMILIES}), evaluated
        print(f"\nkilled {len(lost)} processes of {killed_ip}; retry {retry.run_id} on {other_ip}")


def assert_same_tree_but_derived(output: Path, reference: Path) -> None:
    """`assert_same_tree` over the families' files and records: what the dataset's automation derives from the
    tree whenever it runs (summary, tables, shards, gallery) is left out."""
    for root in (output, reference):
        for path in [p for p in root.rglob("*") if p.is_file() and is_derived(p.relative_to(root).as_posix())]:
            path.unlink()
    assert_same_tree(output, reference)
