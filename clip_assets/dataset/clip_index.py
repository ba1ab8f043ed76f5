"""The clip index's schema and its rows, built from what the families wrote for one partition.

Pure: the caller (`clip_assets.dataset.outputs`) reads the partition's manifests, metadata JSON,
chunk stats and embedding Parquet; this module turns them into one Arrow row per clip. The column
names below are the index's published schema: the vector tables, the near-duplicate grouping, the
training shards and the gallery all read these names and no others.

A clip's `embedding` is the vector its files in the tree hold now, and `embedding_model` and
`embedding_version` name the model that made it: one model per row, so a dataset moving from one
model to another has rows of both until every video is written again, and a vector's size is its
model's (a variable-size list here; each model's vector table has fixed-size vectors of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from clip_assets import layout
from clip_assets.engine.manifest import ManifestEntry
from clip_assets.families import clip_metadata

# The published columns (docs/dataset.md describes each).
CLIP_ID = "clip_id"
PARTITION_KEY = "partition_key"
SOURCE_VIDEO = "source_video"
CHUNK_INDEX = "chunk_index"
SPAN_START = "span_start"
SPAN_END = "span_end"
DURATION = "duration"
PASSED = "passed"
FILTERED_BY = "filtered_by"
VALID = "valid"
ERRORS = "errors"
MOTION_SCORE = "motion_score_global_mean"
MOTION_SCORE_MIN_PATCH = "motion_score_per_patch_min_256"
AESTHETIC_SCORE = "aesthetic_score"
CAPTION = "caption"
CAPTIONS = "captions"
ENHANCED_CAPTIONS = "enhanced_captions"
WIDTH = "width"
HEIGHT = "height"
FRAMERATE = "framerate"
NUM_FRAMES = "num_frames"
VIDEO_CODEC = "video_codec"
WIDTH_SOURCE = "width_source"
HEIGHT_SOURCE = "height_source"
FRAMERATE_SOURCE = "framerate_source"
MP4_KEY = "mp4_key"
MP4_URI = "mp4_uri"
MP4_BYTES = "mp4_bytes"
MP4_SHA256 = "mp4_sha256"
PREVIEW_KEYS = "preview_keys"
PREVIEW_URIS = "preview_uris"
METADATA_KEY = "metadata_key"
METADATA_URI = "metadata_uri"
EMBEDDING_KEY = "embedding_key"
EMBEDDING_URI = "embedding_uri"
EMBEDDING = "embedding"
EMBEDDING_MODEL = "embedding_model"
EMBEDDING_VERSION = "embedding_version"

CAPTION_TYPE = pa.struct(
    [
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("model", pa.string()),
        pa.field("text", pa.string()),
    ]
)
ERROR_TYPE = pa.struct([pa.field("key", pa.string()), pa.field("message", pa.string())])
# NeMo's metas documents spell a window's captions `{model}_caption` and `{model}_enhanced_caption`.
_CAPTION_SUFFIX = "_caption"
_ENHANCED_SUFFIX = "_enhanced_caption"


# Vectors are float32 whatever dtype the clip arrived in; in the index each row's has its model's size.
EMBEDDING_TYPE = pa.list_(pa.field("item", pa.float32()))


def vector_type(dim: int) -> pa.DataType:
    """One model's vectors in its vector table: float32, all of its fixed size (what a vector index needs)."""
    return pa.list_(pa.field("item", pa.float32()), dim)


@dataclass(frozen=True, order=True)
class EmbeddingModel:
    """What made a vector: the clip_embeddings family's algorithm (`cosmos-embed1`, `internvideo2`,
    `color-grid-4x4-v1`) and the dataset's stated version of it ("" when none was stated)."""

    name: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


def clip_index_schema() -> pa.Schema:
    """The index's schema."""
    return pa.schema(
        [
            pa.field(CLIP_ID, pa.string(), nullable=False),
            pa.field(PARTITION_KEY, pa.string(), nullable=False),
            pa.field(SOURCE_VIDEO, pa.string()),
            pa.field(CHUNK_INDEX, pa.int64()),
            pa.field(SPAN_START, pa.float64()),
            pa.field(SPAN_END, pa.float64()),
            pa.field(DURATION, pa.float64()),
            pa.field(PASSED, pa.bool_()),
            pa.field(FILTERED_BY, pa.string()),
            pa.field(VALID, pa.bool_()),
            pa.field(ERRORS, pa.list_(ERROR_TYPE)),
            pa.field(MOTION_SCORE, pa.float64()),
            pa.field(MOTION_SCORE_MIN_PATCH, pa.float64()),
            pa.field(AESTHETIC_SCORE, pa.float64()),
            pa.field(CAPTION, pa.string()),
            pa.field(CAPTIONS, pa.list_(CAPTION_TYPE)),
            pa.field(ENHANCED_CAPTIONS, pa.list_(CAPTION_TYPE)),
            pa.field(WIDTH, pa.int64()),
            pa.field(HEIGHT, pa.int64()),
            pa.field(FRAMERATE, pa.float64()),
            pa.field(NUM_FRAMES, pa.int64()),
            pa.field(VIDEO_CODEC, pa.string()),
            pa.field(WIDTH_SOURCE, pa.int64()),
            pa.field(HEIGHT_SOURCE, pa.int64()),
            pa.field(FRAMERATE_SOURCE, pa.float64()),
            pa.field(MP4_KEY, pa.string()),
            pa.field(MP4_URI, pa.string()),
            pa.field(MP4_BYTES, pa.int64()),
            pa.field(MP4_SHA256, pa.string()),
            pa.field(PREVIEW_KEYS, pa.list_(pa.string())),
            pa.field(PREVIEW_URIS, pa.list_(pa.string())),
            pa.field(METADATA_KEY, pa.string()),
            pa.field(METADATA_URI, pa.string()),
            pa.field(EMBEDDING_KEY, pa.string()),
            pa.field(EMBEDDING_URI, pa.string()),
            pa.field(EMBEDDING, EMBEDDING_TYPE),
            pa.field(EMBEDDING_MODEL, pa.string()),
            pa.field(EMBEDDING_VERSION, pa.string()),
        ]
    )


class ClipIndexError(ValueError):
    """Outputs the index cannot represent; the message names the file and the field."""


@dataclass
class PartitionOutputs:
    """What one partition's families wrote, as read back through the storage layer.

    `documents`: metas key -> the clip's metadata JSON; `mp4s`: clip MP4 key -> its manifest entry
    (bytes, sha256); `previews`: preview keys; `pickles`: embedding pickle keys; `vectors`: clip id
    -> (its vector, the Parquet file it came from); `models`: each such Parquet file -> the model that
    made its vectors; `chunks`: the chunk stats documents.
    """

    partition_key: str
    root: str
    documents: Mapping[str, Mapping[str, Any]]
    mp4s: Mapping[str, ManifestEntry] = field(default_factory=dict)
    previews: Sequence[str] = ()
    pickles: frozenset[str] = frozenset()
    vectors: Mapping[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    models: Mapping[str, EmbeddingModel] = field(default_factory=dict)
    chunks: Sequence[Mapping[str, Any]] = ()

    def model_of(self, parquet_key: str) -> EmbeddingModel:
        """The model of a Parquet file's vectors (its folder's algorithm where nothing else says it)."""
        return self.models.get(parquet_key) or EmbeddingModel(layout.embedding_algorithm_of(parquet_key))


def _captions(windows: Sequence[Mapping[str, Any]], enhanced: bool) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        for name, text in window.items():
            if not isinstance(text, str):
                continue
            if name.endswith(_ENHANCED_SUFFIX) == enhanced and name.endswith(_CAPTION_SUFFIX):
                model = name.removesuffix(_ENHANCED_SUFFIX if enhanced else _CAPTION_SUFFIX)
                rows.append(
                    {
                        "start_frame": window.get("start_frame"),
                        "end_frame": window.get("end_frame"),
                        "model": model,
                        "text": text,
                    }
                )
    return rows


@dataclass(frozen=True)
class _ChunkFacts:
    chunk_index: int
    filtered: bool
    filtered_by: str | None


def _chunk_facts(chunks: Sequence[Mapping[str, Any]]) -> dict[str, _ChunkFacts]:
    """Each clip's chunk and whether it passed, from the chunk stats that list it; for filtered clips the
    filter when the chunk's counters leave no doubt (every filtered clip of the chunk by motion, or every
    one by aesthetics): NeMo writes no per-clip reason, so a chunk that filtered by both leaves it unknown."""
    facts: dict[str, _ChunkFacts] = {}
    for chunk in chunks:
        index = int(chunk.get("clip_chunk_index", 0))
        filtered = list(chunk.get("filtered_clips", []))
        by_motion = int(chunk.get("num_clips_filtered_by_motion", 0))
        by_aesthetic = int(chunk.get("num_clips_filtered_by_aesthetic", 0))
        reason = None
        if filtered and by_motion == len(filtered) and by_aesthetic == 0:
            reason = "motion"
        elif filtered and by_aesthetic == len(filtered) and by_motion == 0:
            reason = "aesthetic"
        for clip_id in chunk.get("clips", []):
            facts[str(clip_id)] = _ChunkFacts(index, False, None)
        for clip_id in filtered:
            facts[str(clip_id)] = _ChunkFacts(index, True, reason)
    return facts


def _mapping(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _number(doc: Mapping[str, Any], key: str, file: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClipIndexError(f"{file}: field {key!r} is {value!r}, not a number")
    return float(value)


def _integer(doc: Mapping[str, Any], key: str, file: str) -> int | None:
    value = _number(doc, key, file)
    return None if value is None else int(value)


def clip_rows(outputs: PartitionOutputs, dims: Mapping[EmbeddingModel, int] | None = None) -> pa.Table:
    """One row per clip metadata document of the partition, in clip id order.

    `dims` holds the vector size of each model the dataset has vectors of; a model's vectors must all
    have its size (for a model new to the dataset, the size of the partition's first vector of it).
    """
    sizes = dict(dims or {})
    for vector_id, (vector, parquet_key) in sorted(outputs.vectors.items()):
        model = outputs.model_of(parquet_key)
        dim = sizes.setdefault(model, vector.size)
        if vector.size != dim:
            raise ClipIndexError(
                f"{layout.full_location(outputs.root, parquet_key)}: field 'embedding' of clip {vector_id} has "
                f"{vector.size} values; the dataset's {model} vectors have {dim}"
            )
    chunk_facts = _chunk_facts(outputs.chunks)
    pickles = {key.rsplit("/", 1)[-1].removesuffix(".pickle"): key for key in outputs.pickles}
    previews_by_clip: dict[str, list[str]] = {}
    for key in sorted(outputs.previews):
        previews_by_clip.setdefault(key.removeprefix(layout.PREVIEWS).split("/", 1)[0], []).append(key)
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray | None] = []
    for key, doc in sorted(outputs.documents.items(), key=lambda item: str(item[1].get(clip_metadata.SPAN_UUID))):
        clip_id = doc.get(clip_metadata.SPAN_UUID)
        if not isinstance(clip_id, str) or layout.clip_metadata_key(clip_id) != key:
            raise ClipIndexError(
                f"{layout.full_location(outputs.root, key)}: field 'span_uuid' {clip_id!r} does not name this file"
            )
        chunk = chunk_facts.get(clip_id)
        # The chunk stats say whether a clip passed; without them (never on a complete write), its location.
        location = str(doc.get(clip_metadata.CLIP_LOCATION, ""))
        filtered = chunk.filtered if chunk is not None else f"/{layout.FILTERED_CLIPS}" in location
        mp4_key = layout.clip_key(clip_id, filtered=filtered)
        mp4 = outputs.mp4s.get(mp4_key)
        span = doc.get("duration_span") or [None, None]
        start, end = (float(span[0]), float(span[1])) if None not in span else (None, None)
        windows = [w for w in doc.get(clip_metadata.WINDOWS, []) if isinstance(w, dict)]
        captions = _captions(windows, enhanced=False)
        motion = _mapping(doc, "motion_score")
        pickle_key = pickles.get(clip_id)
        found = outputs.vectors.get(clip_id)
        vector_model = None if found is None else outputs.model_of(found[1])
        errors = _mapping(doc, "errors")
        preview_keys = previews_by_clip.get(clip_id, [])
        file = layout.full_location(outputs.root, key)
        rows.append(
            {
                CLIP_ID: clip_id,
                PARTITION_KEY: outputs.partition_key,
                SOURCE_VIDEO: doc.get(clip_metadata.SOURCE_VIDEO),
                CHUNK_INDEX: chunk.chunk_index if chunk is not None else None,
                SPAN_START: start,
                SPAN_END: end,
                DURATION: None if start is None or end is None else end - start,
                PASSED: not filtered,
                FILTERED_BY: chunk.filtered_by if chunk is not None else None,
                VALID: bool(doc.get("valid", False)),
                ERRORS: [{"key": str(k), "message": str(v)} for k, v in sorted(errors.items())],
                MOTION_SCORE: _number(motion, "global_mean", file),
                MOTION_SCORE_MIN_PATCH: _number(motion, "per_patch_min_256", file),
                AESTHETIC_SCORE: _number(doc, "aesthetic_score", file),
                CAPTION: captions[0]["text"] if captions else None,
                CAPTIONS: captions,
                ENHANCED_CAPTIONS: _captions(windows, enhanced=True),
                WIDTH: _integer(doc, "width", file),
                HEIGHT: _integer(doc, "height", file),
                FRAMERATE: _number(doc, "framerate", file),
                NUM_FRAMES: _integer(doc, "num_frames", file),
                VIDEO_CODEC: doc.get("video_codec"),
                WIDTH_SOURCE: _integer(doc, "width_source", file),
                HEIGHT_SOURCE: _integer(doc, "height_source", file),
                FRAMERATE_SOURCE: _number(doc, "framerate_source", file),
                MP4_KEY: mp4_key if mp4 is not None else None,
                MP4_URI: layout.full_location(outputs.root, mp4_key) if mp4 is not None else None,
                MP4_BYTES: mp4.size if mp4 is not None else None,
                MP4_SHA256: mp4.sha256 if mp4 is not None else None,
                PREVIEW_KEYS: preview_keys,
                PREVIEW_URIS: [layout.full_location(outputs.root, k) for k in preview_keys],
                METADATA_KEY: key,
                METADATA_URI: file,
                EMBEDDING_KEY: pickle_key,
                EMBEDDING_URI: layout.full_location(outputs.root, pickle_key) if pickle_key else None,
                EMBEDDING_MODEL: vector_model.name if vector_model else None,
                EMBEDDING_VERSION: vector_model.version if vector_model else None,
            }
        )
        vectors.append(None if found is None else found[0])
    schema = clip_index_schema()
    arrays = [pa.array([row[f.name] for row in rows], type=f.type) for f in schema if f.name != EMBEDDING]
    arrays.insert(schema.get_field_index(EMBEDDING), embedding_array(vectors))
    return pa.Table.from_arrays(arrays, schema=schema)


def embedding_array(vectors: Sequence[np.ndarray | None]) -> pa.Array:
    """A list<float32> column of vectors of any size, null where a clip has no vector."""
    flat = [v.reshape(-1).astype(np.float32, copy=False) for v in vectors if v is not None]
    offsets = np.cumsum([0, *(0 if v is None else v.size for v in vectors)], dtype=np.int32)
    values = pa.array(np.concatenate(flat) if flat else np.empty(0, dtype=np.float32), type=pa.float32())
    mask = pa.array([v is None for v in vectors], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=EMBEDDING_TYPE, mask=mask)


def fixed_vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> pa.FixedSizeListArray:
    """A column of list<float32> vectors, all present and of `dim` values, as the vector tables hold them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pa.FixedSizeListArray.from_arrays(column.flatten().cast(pa.float32()), dim)
