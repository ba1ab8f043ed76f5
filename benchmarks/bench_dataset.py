"""Dataset tables: updating the clip index and vectors for one changed video, against a full rebuild.

At 10,000 and 100,000 clips (20 clips a video, synthetic 256-d embeddings and the documents the
families would have written: `clip_assets_tests.support.dataset.synthetic_outputs`), on local disk.
A video's clips share a random centre plus their own noise of similar size (clips of one video
resemble each other, as real embeddings do; unstructured Gaussian vectors are the worst case of any
IVF index and no model's output).

- full rebuild: both Lance tables written from every partition's rows in one commit, and the cosine
  IVF_PQ index trained (what a from-scratch materialization of every partition costs in the tables);
- one changed video: `commit_partitions` with that video's new rows (the `merge_insert` commit of
  each table, then `optimize_indices`), a different video each repetition;
- a nearest-neighbour query through the index (`ClipDataset.nearest_to`, k=10), against the floor of
  an exact search: one matrix product over the same vectors held in memory by numpy;
- every training shard built from a clip index of the largest size, 768-d vectors: time and peak RSS
  in a fresh process (`benchmarks/shards_scale.py`, which `python -m benchmarks.shards_scale --clips N`
  runs alone).

Reading the outputs back from storage is left out of both sides (it is per partition, the same in
an update and in a rebuild's share of that partition). "Incremental" is held as: a changed video
costs under a tenth of a rebuild.
"""

from __future__ import annotations

import shutil
import statistics
import uuid

import numpy as np

from benchmarks import shards_scale
from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress
from clip_assets import layout
from clip_assets.dataset.clip_index import PartitionOutputs
from clip_assets.dataset.read import ClipDataset
from clip_assets.dataset.tables import table_location
from clip_assets.dataset.update import commit_partitions
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import synthetic_outputs

CLIPS_PER_VIDEO = 20
DIM = 256
QUERIES = 50
# A clip's own noise against its video's centre (both per value).
CLIP_SPREAD = 0.8
INCREMENTAL = Target("<=", 0.1, "< 10% of a full rebuild")
FAST_QUERY = Target("<=", 0.05, "< 50 ms per query", on_value=True)


def _video(storage: LocalStorage, number: int, rng: np.random.Generator) -> tuple[str, PartitionOutputs]:
    key = f"video-{number:06d}.mp4"
    centre = rng.normal(size=DIM)
    vectors = (centre + rng.normal(scale=CLIP_SPREAD, size=(CLIPS_PER_VIDEO, DIM))).astype(np.float32)
    return key, synthetic_outputs(storage.root, key, vectors, first_clip=number * CLIPS_PER_VIDEO, filtered_every=10)


def run(ctx: Context, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    for clips in sizes:
        root = ctx.scratch / f"dataset-{clips}"
        rng = np.random.default_rng(clips)
        videos = clips // CLIPS_PER_VIDEO
        storage = LocalStorage(root)
        outputs = dict(_video(storage, number, rng) for number in range(videos))
        rebuild: list[float] = []
        update: list[float] = []
        details: dict[str, object] = {}
        for repetition in range(ctx.repeat):
            progress(f"dataset, {clips} clips: full rebuild {repetition + 1}/{ctx.repeat}")
            shutil.rmtree(root / "dataset", ignore_errors=True)
            with Timer() as timer:
                built = commit_partitions(storage, outputs)
            rebuild.append(timer.seconds)
            details["rebuild"] = {"index_rows": built.index.rows, "vectors": built.vectors.rows,
                                  "vector_index": built.vector_index}  # fmt: skip
        for repetition in range(ctx.repeat):
            progress(f"dataset, {clips} clips: one changed video {repetition + 1}/{ctx.repeat}")
            key, changed = _video(storage, repetition * 7 % videos, rng)
            with Timer() as timer:
                done = commit_partitions(storage, {key: changed})
            update.append(timer.seconds)
            details["update"] = {"rows_updated": done.index.updated, "rows_deleted": done.index.deleted,
                                 "fragments": done.index.fragments, "vector_index": done.vector_index}  # fmt: skip
        workload = f"{clips} clips ({videos} videos)"
        rows += [
            Row("dataset", workload, "floor: full rebuild of index + vectors", "s", rebuild, "itself", rebuild,
                [1.0] * len(rebuild), details=details),
            Row("dataset", workload, "one changed video: index + vectors update", "s", update, "full rebuild",
                rebuild, paired_ratios(update, rebuild), ratio_label="x rebuild", target=INCREMENTAL,
                details=details),
        ]  # fmt: skip
        if clips == max(sizes):
            rows += _nearest(ctx, storage, workload, rng)
        shutil.rmtree(root)
    # The training shards built from a clip index of the largest size (768-d vectors): time and peak RSS.
    rows += shards_scale.run(ctx, max(sizes))
    return rows


def _nearest(ctx: Context, storage: LocalStorage, workload: str, rng: np.random.Generator) -> list[Row]:
    """Median seconds per query through the index, against an exact numpy search in memory."""
    dataset = ClipDataset(storage)
    table = table_location(storage, layout.clip_vectors_key("cosmos-embed1")).open()  # synthetic_outputs' model
    if table is None:
        raise RuntimeError(f"{storage.root}: no vector table was written")
    column = table.to_table(columns=["embedding"]).column("embedding").combine_chunks()
    matrix = column.flatten().to_numpy().reshape(len(column), DIM)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    indexed: list[float] = []
    exact: list[float] = []
    recall: list[float] = []
    for repetition in range(ctx.repeat):
        progress(f"dataset, nearest at {workload}: repetition {repetition + 1}/{ctx.repeat}")
        queries = matrix[rng.choice(len(matrix), size=QUERIES, replace=False)]
        found: list[set[int]] = []
        with Timer() as timer:
            for query in queries:
                found.append({uuid.UUID(c).int for c, _ in dataset.nearest_to(query, 10)})
        indexed.append(timer.seconds / QUERIES)
        truth: list[set[int]] = []
        with Timer() as timer:
            for query in queries:
                truth.append(set(np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10].tolist()))
        exact.append(timer.seconds / QUERIES)
        ids = table.to_table(columns=["clip_id"]).column("clip_id").to_pylist()
        truth_ids = [{uuid.UUID(ids[i]).int for i in rows} for rows in truth]
        recall.append(statistics.mean(len(f & t) / 10 for f, t in zip(found, truth_ids, strict=True)))
    details = {"recall_at_10": recall, "queries_per_repetition": QUERIES, "vectors": len(matrix),
               "indices": [i.index_type for i in table.describe_indices()]}  # fmt: skip
    return [
        Row("dataset", workload, "floor: exact search, numpy in memory", "s/query", exact, "itself", exact,
            [1.0] * len(exact)),
        Row("dataset", workload, "nearest(k=10), ClipDataset.nearest_to", "s/query", indexed, "exact numpy",
            exact, paired_ratios(indexed, exact), target=FAST_QUERY, details=details),
    ]  # fmt: skip
