"""Dataset tables: each derived table's build time and peak RSS, one changed video against a full rebuild,
and `nearest` latency and recall@10, at 10,000 and 100,000 clips by default and at any `--clips` size
(`python -m benchmarks --only dataset --clips 1000000`).

The clips: 20 a video, 768-d embeddings clustered like real ones (a video's clips share its centre, videos
share one of `clips / 2,000` topics, so a clip is at cosine ~0.85 from its video's other clips and ~0.6
from its topic's; one video in 100 is a re-upload of another, its clips copies at cosine ~0.99995: the
near-duplicates), with the documents the families would have written
(`clip_assets_tests.support.dataset.synthetic_outputs`), on local disk. Every clip is passed, so the
vector table holds one 768-d float32 vector per clip (3 GB at 10^6).

- clip index + vectors, full rebuild: up to `FULL_REBUILD_MAX` clips, both Lance tables from every
  partition's rows in one `commit_partitions` (what a from-scratch materialization of every partition
  costs in the tables); above it (that commit holds every row in memory), written by a fresh process
  streaming the rows of 500 videos at a time into Lance, and its peak RSS reported: a bulk load, not the
  production path. Then the cosine IVF_PQ index is trained.
- one changed video: `commit_partitions` with that video's new rows (a different video each
  repetition), against the full rebuild.
- derived tables (`DERIVED_BUILDS`), each in a fresh process that reports its own peak RSS (VmHWM):
  a build from nothing and an update after the changed video, against a floor process that imports the
  same modules. `near_duplicates` is held to a peak RSS under 1.5 GB.
- `nearest` (`ClipDataset.nearest_to`, k=10) through the index, against an exact search: up to
  `FULL_REBUILD_MAX` clips one matrix product over the vectors held in memory by numpy; above it a scan of
  the vector table, every query against each batch (the 3 GB are never held at once). recall@10 is
  measured against that exact search at the size itself.
- every training shard built from a clip index of the largest size, 768-d vectors: time and peak RSS
  in a fresh process (`benchmarks/shards_scale.py`, which `python -m benchmarks.shards_scale --clips N`
  runs alone).

Reading the outputs back from storage is left out (it is per partition, the same in an update and in a
rebuild's share of that partition). "Incremental" is held as: a changed video costs under a tenth of a
rebuild.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks import shards_scale
from benchmarks.bench_scale import ru_maxrss_mb
from benchmarks.harness import REPO_ROOT, Context, Row, Target, Timer, paired_ratios, peak_rss_mb, progress, settle
from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel, PartitionOutputs
from clip_assets.dataset.read import ClipDataset
from clip_assets.dataset.tables import (
    EmbeddingModels,
    VectorTable,
    refresh_vector_index,
    save_embedding_models,
    table_location,
    vector_rows,
    vector_schema,
)
from clip_assets.dataset.update import commit_partitions
from clip_assets.storage import LocalStorage, Storage
from clip_assets_tests.support.dataset import synthetic_outputs

CLIPS_PER_VIDEO = 20
DIM = 768
# The model `synthetic_outputs` writes the documents and vectors of.
MODEL = EmbeddingModel("cosmos-embed1", "")
QUERIES = 50
SEED = 2024
# Clips per topic; a video's centre spread around its topic, a clip's around its video (per value).
CLIPS_PER_TOPIC = 2_000
VIDEO_SPREAD = 0.6
CLIP_SPREAD = 0.5
# One video in this many re-uploads another (its clips copied, plus this noise per value).
REUPLOAD_EVERY = 100
REUPLOAD_NOISE = 0.01
# Up to this many clips the full rebuild is `commit_partitions` of everything; above, a streamed bulk load.
FULL_REBUILD_MAX = 100_000
BULK_VIDEOS = 500
INCREMENTAL = Target("<=", 0.1, "< 10% of a full rebuild")
FAST_QUERY = Target("<=", 0.05, "< 50 ms per query", on_value=True)
BOUNDED_RSS = Target("<=", 1500.0, "< 1.5 GB peak RSS", on_value=True)


def _video_vectors(number: int, topics: int, changed: int = 0) -> np.ndarray:
    """Video `number`'s clip vectors, the same on every call (`changed` > 0: a re-embedded version)."""
    if number % REUPLOAD_EVERY == REUPLOAD_EVERY - 1 and not changed:
        noise = np.random.default_rng([SEED, number, 1]).normal(scale=REUPLOAD_NOISE, size=(CLIPS_PER_VIDEO, DIM))
        return (_video_vectors(number - 1, topics) + noise).astype(np.float32)
    topic = np.random.default_rng([SEED, 0, number % topics]).normal(size=DIM)
    rng = np.random.default_rng([SEED, number, 2 + changed])
    centre = topic + rng.normal(scale=VIDEO_SPREAD, size=DIM)
    return (centre + rng.normal(scale=CLIP_SPREAD, size=(CLIPS_PER_VIDEO, DIM))).astype(np.float32)


def _video(storage: Storage, number: int, topics: int, changed: int = 0) -> tuple[str, PartitionOutputs]:
    key = f"video-{number:06d}.mp4"
    vectors = _video_vectors(number, topics, changed)
    return key, synthetic_outputs(storage.root, key, vectors, first_clip=number * CLIPS_PER_VIDEO)


def _topics(clips: int) -> int:
    return max(1, clips // CLIPS_PER_TOPIC)


# --- what runs in a fresh process (`python -m benchmarks.bench_dataset MODE ROOT ...`) ----------------


def _bulk_write(storage: Storage, videos: int) -> dict[str, Any]:
    """Both tables written by streaming 500 videos' rows at a time into Lance (sizes past a full commit),
    and the vector table listed in `dataset/embedding_models.json` as `commit_partitions` lists it."""
    import lance

    topics = _topics(videos * CLIPS_PER_VIDEO)
    table = VectorTable(MODEL, DIM)

    def index_batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, videos, BULK_VIDEOS):
            stop = min(start + BULK_VIDEOS, videos)
            rows = pa.concat_tables(
                [ci.clip_rows(_video(storage, n, topics)[1], {MODEL: DIM}) for n in range(start, stop)]
            )
            progress(f"bulk write: {stop * CLIPS_PER_VIDEO} of {videos * CLIPS_PER_VIDEO} clips")
            yield from rows.to_batches()

    def vector_batches(index: Any) -> Iterator[pa.RecordBatch]:
        for batch in index.to_batches(filter=f"{ci.PASSED} AND {ci.EMBEDDING} IS NOT NULL"):
            yield from vector_rows(pa.Table.from_batches([batch]), MODEL, DIM).to_batches()

    index_uri = table_location(storage, layout.clip_index_key()).uri
    schema = ci.clip_index_schema()
    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, index_batches()), index_uri, mode="create")
    index = lance.dataset(index_uri)
    reader = pa.RecordBatchReader.from_batches(vector_schema(DIM), vector_batches(index))
    lance.write_dataset(reader, table_location(storage, table.key).uri, mode="create")
    save_embedding_models(storage, EmbeddingModels((table,), MODEL))
    return {"rows": index.count_rows()}


def _near_duplicates(storage: Storage) -> dict[str, Any]:
    from clip_assets.dataset.near_duplicates_update import update_near_duplicates

    update = update_near_duplicates(storage)
    build = update.build
    return {
        "clips": update.grouping.clips,
        "duplicates": update.grouping.duplicates,
        "clusters": update.grouping.clusters,
        "clusters_decided": build.clusters_decided,
        "clips_decided": build.clips_decided,
        "kmeans": ("fitted: " if build.refit.needed else "") + build.refit.reason,
        "memory_mb": update.grouping.settings.memory_mb,
    }


# Each derived table built from the tables as they are, in a fresh process: its time and peak RSS are
# measured from nothing (its outputs removed first: `DERIVED_OUTPUTS`) and after the changed video.
# training_shards goes here (a build function and its output keys) once its build streams the index.
DERIVED_BUILDS: dict[str, Callable[[Storage], dict[str, Any]]] = {"near_duplicates": _near_duplicates}
DERIVED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "near_duplicates": (
        layout.near_duplicates_key(),
        layout.near_duplicates_summary_key(),
        layout.near_duplicates_centroids_key(),
    ),
}
DERIVED_TARGETS: dict[str, Target] = {"near_duplicates": BOUNDED_RSS}


def child(mode: str, root: str, argument: str) -> dict[str, Any]:
    storage = LocalStorage(root)
    if mode == "floor":
        import clip_assets.dataset.near_duplicates_update
        import clip_assets.dataset.tables  # noqa: F401

        return {"rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(), "seconds": 0.0}
    with Timer() as timer:
        details = _bulk_write(storage, int(argument)) if mode == "bulk" else DERIVED_BUILDS[mode](storage)
    return {"rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(), "seconds": timer.seconds, "details": details}


def in_fresh_process(mode: str, root: Path, log: Path, argument: str = "") -> dict[str, Any]:
    settle()
    command = [sys.executable, "-m", "benchmarks.bench_dataset", mode, str(root), argument]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    with log.open("a") as stderr:
        stderr.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(
            f"{mode} process failed (exit {done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-8:])
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark --------------------------------------------------------------------------------


def _rebuild(ctx: Context, storage: LocalStorage, root: Path, clips: int) -> tuple[list[float], list[float], dict]:
    """Seconds (and, past `FULL_REBUILD_MAX`, the bulk process's peak RSS) of building both tables anew."""
    videos = clips // CLIPS_PER_VIDEO
    seconds: list[float] = []
    rss: list[float] = []
    details: dict[str, Any] = {}
    outputs = dict(_video(storage, n, _topics(clips)) for n in range(videos)) if clips <= FULL_REBUILD_MAX else {}
    for repetition in range(ctx.repeat):
        progress(f"dataset, {clips} clips: full rebuild {repetition + 1}/{ctx.repeat}")
        shutil.rmtree(root / "dataset", ignore_errors=True)
        if outputs:
            settle()
            with Timer() as timer:
                built = commit_partitions(storage, outputs)
            seconds.append(timer.seconds)
            details["rebuild"] = {"index_rows": built.index.rows, "vectors": built.vectors.rows,
                                  "vector_index": built.vector_index, "path": "commit_partitions"}  # fmt: skip
        else:
            done = in_fresh_process("bulk", root, ctx.log, str(videos))
            with Timer() as timer:
                trained = refresh_vector_index(table_location(storage, layout.clip_vectors_key(MODEL.name)))
            seconds.append(done["seconds"] + timer.seconds)
            rss.append(done["rss_mb"])
            details["rebuild"] = {"rows": done["details"]["rows"], "vector_index": trained,
                                  "bulk_write_seconds": done["seconds"], "index_training_seconds": timer.seconds,
                                  "path": "streamed bulk load (fresh process)"}  # fmt: skip
    return seconds, rss, details


def run(ctx: Context, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    for clips in sizes:
        root = ctx.scratch / f"dataset-{clips}"
        storage = LocalStorage(root)
        videos = clips // CLIPS_PER_VIDEO
        workload = f"{clips} clips ({videos} videos, {DIM}-d)"
        rebuild, bulk_rss, details = _rebuild(ctx, storage, root, clips)
        derived_full = {name: [in_fresh_process(name, root, ctx.log)] for name in DERIVED_BUILDS}
        for _ in range(1, ctx.repeat):
            for name in DERIVED_BUILDS:
                for key in DERIVED_OUTPUTS[name]:
                    storage.delete(key)
                derived_full[name].append(in_fresh_process(name, root, ctx.log))
        update: list[float] = []
        derived_update: dict[str, list[dict[str, Any]]] = {name: [] for name in DERIVED_BUILDS}
        for repetition in range(ctx.repeat):
            progress(f"dataset, {clips} clips: one changed video {repetition + 1}/{ctx.repeat}")
            key, changed = _video(storage, repetition * 7 % videos, _topics(clips), changed=repetition + 1)
            settle()
            with Timer() as timer:
                done = commit_partitions(storage, {key: changed})
            update.append(timer.seconds)
            details["update"] = {"rows_updated": done.index.updated, "rows_deleted": done.index.deleted,
                                 "fragments": done.index.fragments, "vector_index": done.vector_index}  # fmt: skip
            for name in DERIVED_BUILDS:
                derived_update[name].append(in_fresh_process(name, root, ctx.log))
        floor = [in_fresh_process("floor", root, ctx.log)["rss_mb"] for _ in range(ctx.repeat)]
        rebuild_label = "floor: full rebuild of index + vectors"
        if clips > FULL_REBUILD_MAX:
            rebuild_label += " (streamed bulk load + IVF_PQ training)"
        rows += [
            Row("dataset", workload, rebuild_label, "s", rebuild, "itself", rebuild, [1.0] * len(rebuild),
                details=details),
            Row("dataset", workload, "one changed video: index + vectors update", "s", update, "full rebuild",
                rebuild, paired_ratios(update, rebuild), ratio_label="x rebuild", target=INCREMENTAL,
                details=details),
            Row("dataset", workload, "floor: process importing the dataset modules", "MB RSS", floor, "itself",
                floor, [1.0] * len(floor)),
        ]  # fmt: skip
        if bulk_rss:
            rows.append(Row("dataset", workload, "index + vectors bulk load: peak RSS", "MB RSS", bulk_rss,
                            "import floor", floor, paired_ratios(bulk_rss, floor)))  # fmt: skip
        for name in DERIVED_BUILDS:
            full = [r["seconds"] for r in derived_full[name]]
            after = [r["seconds"] for r in derived_update[name]]
            full_rss = [r["rss_mb"] for r in derived_full[name]]
            after_rss = [r["rss_mb"] for r in derived_update[name]]
            info = {"full": [r["details"] for r in derived_full[name]],
                    "update": [r["details"] for r in derived_update[name]]}  # fmt: skip
            rows += [
                Row("dataset", workload, f"{name}: build from nothing", "s", full, "itself", full,
                    [1.0] * len(full), details=info),
                Row("dataset", workload, f"{name}: update after one changed video", "s", after,
                    f"{name} build", full, paired_ratios(after, full), ratio_label="x build", details=info),
                Row("dataset", workload, f"{name}: build from nothing, peak RSS", "MB RSS", full_rss,
                    "import floor", floor, paired_ratios(full_rss, floor), target=DERIVED_TARGETS.get(name)),
                Row("dataset", workload, f"{name}: update, peak RSS", "MB RSS", after_rss, "import floor", floor,
                    paired_ratios(after_rss, floor), target=DERIVED_TARGETS.get(name)),
            ]  # fmt: skip
        if clips == max(sizes):
            rows += _nearest(ctx, storage, workload, clips)
        shutil.rmtree(root)
    # The training shards built from a clip index of the largest size (768-d vectors): time and peak RSS.
    rows += shards_scale.run(ctx, max(sizes))
    return rows


def _exact_top10(storage: Storage, queries: np.ndarray, in_memory: bool) -> tuple[list[set[str]], float]:
    """Each query's 10 nearest clip ids by exact cosine, and the seconds per query it took."""
    table = table_location(storage, layout.clip_vectors_key(MODEL.name)).latest()
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(queries), 0), dtype=object)
    if in_memory:
        column = table.to_table(columns=[ci.EMBEDDING, ci.CLIP_ID])
        matrix = column.column(ci.EMBEDDING).combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        ids = np.asarray(column.column(ci.CLIP_ID).to_pylist(), dtype=object)
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        with Timer() as timer:
            order = [np.argsort(-(unit @ query))[:10] for query in unit_queries]
        return [set(ids[o].tolist()) for o in order], timer.seconds / len(queries)
    with Timer() as timer:
        for batch in table.to_batches(columns=[ci.EMBEDDING, ci.CLIP_ID], batch_size=65_536):
            matrix = batch.column(ci.EMBEDDING).flatten().to_numpy().reshape(-1, DIM)
            unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
            scores = np.concatenate([best, unit_queries @ unit.T], axis=1)
            ids = np.concatenate([best_ids, np.tile(np.asarray(batch.column(ci.CLIP_ID).to_pylist(), object),
                                                    (len(queries), 1))], axis=1)  # fmt: skip
            keep = np.argpartition(-scores, 10, axis=1)[:, :10]
            best = np.take_along_axis(scores, keep, axis=1)
            best_ids = np.take_along_axis(ids, keep, axis=1)
    return [set(row.tolist()) for row in best_ids], timer.seconds / len(queries)


def _nearest(ctx: Context, storage: LocalStorage, workload: str, clips: int) -> list[Row]:
    """Median seconds per query through the index, against an exact search (recall@10 against it)."""
    dataset = ClipDataset(storage)
    table = table_location(storage, layout.clip_vectors_key(MODEL.name)).latest()
    rng = np.random.default_rng(clips)
    indexed: list[float] = []
    exact: list[float] = []
    recall: list[float] = []
    for repetition in range(ctx.repeat):
        progress(f"dataset, nearest at {workload}: repetition {repetition + 1}/{ctx.repeat}")
        picked = np.sort(rng.choice(table.count_rows(), size=QUERIES, replace=False))
        column = table.take(pa.array(picked, pa.int64()), columns=[ci.EMBEDDING]).column(ci.EMBEDDING)
        queries = column.combine_chunks().flatten().to_numpy().reshape(QUERIES, DIM)
        found: list[set[str]] = []
        started = time.perf_counter()
        for query in queries:
            found.append({c for c, _ in dataset.nearest_to(query, 10)})
        indexed.append((time.perf_counter() - started) / QUERIES)
        truth, seconds = _exact_top10(storage, queries, in_memory=clips <= FULL_REBUILD_MAX)
        exact.append(seconds)
        recall.append(statistics.mean(len(f & t) / 10 for f, t in zip(found, truth, strict=True)))
    floor = "exact numpy, in memory" if clips <= FULL_REBUILD_MAX else "exact scan of the vector table"
    details = {"recall_at_10": recall, "queries_per_repetition": QUERIES, "vectors": table.count_rows(),
               "indices": [i.index_type for i in table.describe_indices()], "exact_search": floor}  # fmt: skip
    return [
        Row("dataset", workload, f"floor: {floor}", "s/query", exact, "itself", exact, [1.0] * len(exact)),
        Row("dataset", workload, "nearest(k=10), ClipDataset.nearest_to", "s/query", indexed, floor, exact,
            paired_ratios(indexed, exact), target=FAST_QUERY, details=details),
        Row("dataset", workload, "nearest(k=10): recall@10 against the exact search", "recall", recall,
            "exact search (1.0)", [1.0] * len(recall), recall, details=details),
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")))
