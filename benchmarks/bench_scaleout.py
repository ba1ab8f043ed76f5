"""Scale-out on Ray: one run's partitions as Ray tasks on one worker node against two, and what Dagster adds
per partition when a run holds 500 or 5,000 of them.

The cluster is real and local (clip_assets_tests/support/ray_cluster.py): a head with no CPUs, so no
task lands on it, and worker nodes of one CPU each, each its own set of processes on its own loopback
address. Each partition's task asks for one CPU (`ray_cpus_per_partition: 1`), so a node writes one
partition at a time and two nodes two: on a 2-core machine, the second node has the second core.

- nodes: clips/s of one run (the engine's `write_partitions` with the Ray backend, what the assets'
  step calls) over many small partitions, first with one worker node (the floor), then with the second
  node started; each repetition into a fresh output. The partitions are CPU-bound (probing every MP4,
  hashing, encoding), so the second core is what the second node brings. Target: >= 1.5x one node.
  Workers are warmed up before each configuration is timed (a Ray worker process imports clip-assets
  once).
- Dagster per partition: `clip-assets backfill --families-only --skip-checks`'s loop (`run_backfill`,
  in process, the embedded instance) over N tiny partitions in one run (`partitions_per_run` N), with
  the Ray backend on both nodes, against the engine writing the same partitions through the same
  backend without Dagster: the difference per partition is Dagster's cost (events, partition checks),
  the tasks' own cost being in both.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress, settle, stderr_to
from benchmarks.runners import NAMES, WRITES_ONLY, add_partitions, embedded_instance
from benchmarks.workloads import INPUT_PATH, build_tiny_inbox
from clip_assets.cli.backfill import run_backfill
from clip_assets.components.dataset import dataset_definitions, dataset_resources
from clip_assets.components.resources import StorageResource, ValidationLimitsResource, WriterSettingsResource
from clip_assets.engine.batches import write_partitions
from clip_assets.engine.partition import WriteJob
from clip_assets.families import FAMILIES
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.ray_cluster import WORKER_IPS, RayCluster, ray_cluster

TWO_NODES = Target(">=", 1.5, ">= 1.5x one node")
LOG = logging.getLogger("benchmarks.scaleout")
# Ray's own variables for this process, as a run's process on the cluster has them.
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


def settings(parallel_backend: str = "ray") -> WriterSettingsResource:
    return WriterSettingsResource(input_path=INPUT_PATH, parallel_backend=parallel_backend, ray_cpus_per_partition=1)


def build_inbox(inbox: Path, partitions: int, clips: int) -> list[str]:
    """`partitions` small processed videos of `clips` 8-frame clips each (two WebP windows, an embedding)."""
    keys = []
    for index in range(partitions):
        name = f"s{index:04d}.mp4"
        source = f"{INPUT_PATH}/{name}"
        write_video(inbox / f"{name}.parquet", make_clips(clips, source_video=source), source_video=source)
        keys.append(name)
    return keys


def engine_write(inbox: Path, output: Path, keys: Sequence[str]) -> None:
    """One run's partitions through the assets' entry point (`write_partitions`), the Ray backend chosen."""
    output_resource, inbox_resource = StorageResource(url=str(output)), StorageResource(url=str(inbox))
    output_storage = output_resource.get_storage()
    job = WriteJob(
        FAMILIES,
        inbox_resource.get_storage(),
        output_storage,
        settings().to_settings(output_storage.root),
        ValidationLimitsResource().to_limits(),
        inbox_spec=inbox_resource.spec(),
        output_spec=output_resource.spec(),
    )
    for outcome in write_partitions(job, keys, LOG):
        for error in outcome.errors.values():
            raise error


@contextmanager
def connected(cluster: RayCluster) -> Iterator[None]:
    """This process as a run's process on the cluster: Ray's variables set (before Ray is imported: it reads
    the auth mode once), disconnected afterwards."""
    saved = {name: os.environ.get(name) for name in RAY_VARIABLES}
    os.environ.update({name: cluster.env[name] for name in RAY_VARIABLES if name in cluster.env})
    try:
        yield
    finally:
        import ray

        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(ctx: Context, partitions: int, clips: int, per_run: Sequence[int]) -> list[Row]:
    root = ctx.scratch / "scaleout"
    inbox = root / "inbox"
    keys = build_inbox(inbox, partitions, clips)
    total_clips = partitions * clips
    warm = keys[: 2 * len(WORKER_IPS)]
    rates: dict[int, list[float]] = {1: [], 2: []}
    rows: list[Row] = []
    # Ray's socket paths live under the cluster's folder: a short one.
    with ray_cluster(Path(ctx.scratch) / "r", workers=1) as cluster, connected(cluster), stderr_to(ctx.log):
        progress(f"scale-out: Ray cluster of a head and one worker node up in {cluster.started_in_s:.1f} s")
        for nodes in (1, 2):
            if nodes == 2:
                cluster.add_worker()
            engine_write(inbox, root / "warm", warm)  # each node's worker process imports clip-assets once
            shutil.rmtree(root / "warm")
            for index in range(ctx.repeat):
                progress(f"scale-out, {partitions} partitions of {clips} clips on {nodes} node(s): {index + 1}")
                settle()
                with Timer() as timer:
                    engine_write(inbox, root / "out", keys)
                rates[nodes].append(total_clips / timer.seconds)
                shutil.rmtree(root / "out")
        workload = f"one run, {partitions} partitions of {clips} clips"
        rows += [
            Row("scale-out (Ray)", workload, "floor: one worker node (1 CPU)", "clips/s", rates[1], "itself",
                rates[1], [1.0] * len(rates[1])),
            Row("scale-out (Ray)", workload, "two worker nodes (1 CPU each)", "clips/s", rates[2], "one node",
                rates[1], paired_ratios(rates[2], rates[1]), ratio_label="x one node", target=TWO_NODES),
        ]  # fmt: skip
        for size in per_run:
            rows += dagster_per_partition(ctx, root, size)
    shutil.rmtree(root)
    return rows


def dagster_per_partition(ctx: Context, root: Path, size: int) -> list[Row]:
    """Seconds per partition of one run of `size` tiny partitions, through Dagster and through the engine alone."""
    inbox = root / f"tiny-{size}"
    keys = build_tiny_inbox(inbox, size)
    engine: list[float] = []
    dagster: list[float] = []
    for index in range(ctx.repeat):
        progress(f"Dagster per partition with the Ray backend, {size} partitions in one run: {index + 1}")
        settle()
        with Timer() as timer:
            engine_write(inbox, root / "engine", keys)
        engine.append(timer.seconds / size)
        shutil.rmtree(root / "engine")
        output = root / "dagster"
        definitions = dataset_definitions(
            NAMES, dataset_resources(NAMES, str(inbox), str(output), settings()), partitions_per_run=size
        )
        with embedded_instance() as instance:
            add_partitions(instance, keys)
            settle()
            failures: list[str] = []
            with Timer() as timer:
                done = run_backfill(instance, definitions, NAMES, keys, size, failures.append, WRITES_ONLY)
            if not done:
                raise RuntimeError(f"the run of {size} partitions failed: {failures[:3]}")
            dagster.append(timer.seconds / size)
        shutil.rmtree(output)
    shutil.rmtree(inbox)
    workload = f"one run of {size} tiny partitions, Ray backend, 2 nodes"
    overhead = [d - e for d, e in zip(dagster, engine, strict=True)]
    return [
        Row("Dagster per partition (Ray)", workload, "floor: engine, no Dagster", "s/partition", engine, "itself",
            engine, [1.0] * len(engine)),
        Row("Dagster per partition (Ray)", workload, "Dagster (run_backfill, embedded instance)", "s/partition",
            dagster, "engine", engine, paired_ratios(dagster, engine),
            details={"overhead_s_per_partition": overhead, "median_overhead_ms": 1000 * statistics.median(overhead)}),
    ]  # fmt: skip
