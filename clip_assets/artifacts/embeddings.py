"""Embeddings: a pickle per passed clip and a Parquet file per clip chunk, for one algorithm.

The vector keeps the dtype it arrived in (NeMo widens to float64 in its Parquet; clip-assets does not).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.artifacts.base import Artifact, BuildReport
from clip_assets.contract import ClipRecord
from clip_assets.settings import WriterSettings


def chunk_embeddings_parquet(ids: list[str], vectors: list[np.ndarray]) -> bytes:
    """Columns `id` and `embedding` in clip order: what NeMo's `*_embd_parquet` files hold."""
    flat = np.concatenate(vectors) if vectors else np.empty(0, dtype=np.float32)
    offsets = np.cumsum([0, *(v.size for v in vectors)], dtype=np.int32)
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "embedding": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def build_embeddings(
    clips: Iterable[ClipRecord], source_video: str, settings: WriterSettings, report: BuildReport
) -> Iterator[Artifact]:
    """Pickles stream per clip; each chunk's Parquet follows once the file's clips are read."""
    algorithm = settings.embedding_algorithm
    per_chunk: dict[int, tuple[list[str], list[np.ndarray]]] = {}
    for clip in clips:
        if clip.filtered:
            continue
        vector = clip.embeddings.get(algorithm)
        if vector is None:
            if settings.generate_embeddings:
                others = sorted(clip.embeddings)
                hint = f" (it has {others})" if others else ""
                report.warn(f"Clip {clip.uuid} has no {algorithm} embedding{hint}, skipped")
            report.counts["clips_without_embedding"] += 1
            continue
        report.counts["embeddings"] += 1
        ids, vectors = per_chunk.setdefault(clip.chunk_index, ([], []))
        ids.append(clip.uuid)
        vectors.append(vector.reshape(-1))
        if not settings.dry_run:
            yield Artifact(layout.embedding_pickle_key(algorithm, clip.uuid), pickle.dumps(vector))
    if settings.dry_run:
        return
    for chunk_index in sorted(per_chunk):
        ids, vectors = per_chunk[chunk_index]
        report.counts["chunk_parquets"] += 1
        yield Artifact(
            layout.chunk_embedding_key(algorithm, source_video, chunk_index),
            chunk_embeddings_parquet(ids, vectors),
        )
