"""clip-assets on a real Ray cluster of local processes (support/ray_cluster.py: a head with no CPUs and two
worker nodes of one CPU, token auth): a run's partitions as Ray tasks spread over both nodes, a task's
worker killed mid-write, NeMo-style inputs written as the threaded path writes them, and a backfill
launched from the UI's GraphQL onto the cluster through deploy/ray's instance file, surviving a lost node.

One cluster serves the module (about 20-35 s to start on a busy 2-core machine): each test leaves it as
it found it, with every node alive.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from dagster import ExecuteInProcessResult, instance_for_test, materialize

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.contract import EmbeddingLayout, write_processed_video
from clip_assets.contract.partition_keys import chunk_key
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos
from clip_assets_tests.support.deployment import holders, manifest_without_fingerprints, tree_files
from clip_assets_tests.support.factories import make_clips, video_info, write_video
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
