"""One partition's outputs, read back through the storage layer from what its manifests record.

Never the inbox: the derived tables describe what was written. Each family's manifest names its
keys (and the MP4s' bytes and sha256); the documents and the embedding Parquet files are read with a
bounded pool, since on S3 each is a round trip.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.dataset.clip_index import ClipIndexError, EmbeddingModel, PartitionOutputs
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import clip_embeddings, clip_files, clip_metadata, clip_previews, video_summaries
from clip_assets.storage import Storage
from clip_assets.thread_pools import shared_pool

READ_WORKERS = 8


def _document(storage: Storage, key: str) -> dict[str, Any]:
    try:
        document = json.loads(storage.read(key))
    except ValueError as exc:
        raise ClipIndexError(f"{layout.full_location(storage.root, key)}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ClipIndexError(f"{layout.full_location(storage.root, key)}: not a JSON object")
    return document


def _vectors(storage: Storage, key: str) -> tuple[dict[str, tuple[np.ndarray, str]], EmbeddingModel]:
    """A chunk's vectors by clip id, and the model that made them (as the file names it)."""
    where = layout.full_location(storage.root, key)
    try:
        table = pq.read_table(io.BytesIO(storage.read(key)), columns=list(clip_embeddings.PARQUET_COLUMNS))
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ClipIndexError(f"{where}: not a readable embedding Parquet file ({exc})") from None
    model = EmbeddingModel(*clip_embeddings.embedding_model(table.schema.metadata, key))
    try:
        layout.check_embedding_model(model.name, model.version)
    except layout.LayoutError as exc:
        raise ClipIndexError(f"{where}: schema metadata {clip_embeddings.MODEL_METADATA.decode()!r}: {exc}") from None
    ids = table.column("id").to_pylist()
    column = table.column("embedding").combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise ClipIndexError(f"{where}: field 'embedding' is {column.type}, expected a list of floats")
    if column.null_count:
        row = column.is_null().to_pylist().index(True)
        raise ClipIndexError(f"{where}: field 'embedding' is null in row {row} (clip {ids[row]})")
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vectors = {str(clip_id): (values[offsets[row] : offsets[row + 1]], key) for row, clip_id in enumerate(ids)}
    return vectors, model


def read_partition_outputs(storage: Storage, partition_key: str) -> PartitionOutputs | None:
    """The partition's recorded outputs, or None where its clip metadata was never written (or was removed)."""
    metadata = load_manifest(storage, clip_metadata.FAMILY.name, partition_key)
    if metadata is None:
        return None
    files = load_manifest(storage, clip_files.FAMILY.name, partition_key)
    previews = load_manifest(storage, clip_previews.FAMILY.name, partition_key)
    embeddings = load_manifest(storage, clip_embeddings.FAMILY.name, partition_key)
    summaries = load_manifest(storage, video_summaries.FAMILY.name, partition_key)
    pool = shared_pool(READ_WORKERS)
    document_keys = sorted(k for k in metadata.entries if k.startswith(layout.CLIP_METADATA))
    chunk_keys = sorted(k for k in (summaries.entries if summaries else {}) if k.startswith(layout.CHUNK_STATS))
    embedding_keys = sorted(embeddings.entries) if embeddings else []
    parquet_keys = [k for k in embedding_keys if k.endswith(".parquet")]
    vectors: dict[str, tuple[np.ndarray, str]] = {}
    models: dict[str, EmbeddingModel] = {}
    for key, (found, model) in zip(
        parquet_keys, pool.map(lambda key: _vectors(storage, key), parquet_keys), strict=True
    ):
        vectors.update(found)
        models[key] = model
    return PartitionOutputs(
        partition_key=partition_key,
        root=storage.root,
        documents=dict(zip(document_keys, pool.map(lambda key: _document(storage, key), document_keys), strict=True)),
        mp4s={k: e for k, e in (files.entries.items() if files else ()) if k.endswith(".mp4")},
        previews=sorted(k for k in (previews.entries if previews else {}) if k.startswith(layout.PREVIEWS)),
        pickles=frozenset(k for k in embedding_keys if k.endswith(".pickle")),
        vectors=vectors,
        models=models,
        chunks=list(pool.map(lambda key: _document(storage, key), chunk_keys)),
    )
