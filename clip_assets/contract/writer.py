"""Writer for upstream producers: clip records in, one complete processed-video file out.

It streams: clips are written in row groups of `row_group_size`, so a producer never holds a whole
video's clips in memory, and readers later stream the same small row groups back. The file only
appears at its final name once its footer is written (temp name in the same folder, then rename).
"""

from __future__ import annotations

import functools
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.contract import schema
from clip_assets.contract.records import ClipRecord, VideoInfo


def _batch(clips: list[ClipRecord], arrow_schema: pa.Schema) -> pa.RecordBatch:
    vector_type = np.dtype(arrow_schema.field(schema.EMBEDDINGS).type.item_type.value_type.to_pandas_dtype())
    columns = {
        schema.CLIP_UUID: [c.uuid for c in clips],
        schema.CHUNK_INDEX: [c.chunk_index for c in clips],
        schema.SPAN_START: [c.span_start for c in clips],
        schema.SPAN_END: [c.span_end for c in clips],
        schema.FILTERED: [c.filtered for c in clips],
        schema.FILTERED_BY: [c.filtered_by for c in clips],
        schema.MP4: [c.mp4 for c in clips],
        schema.WINDOWS: [
            [
                {
                    schema.WINDOW_START_FRAME: w.start_frame,
                    schema.WINDOW_END_FRAME: w.end_frame,
                    schema.WINDOW_WEBP: w.webp,
                    schema.WINDOW_CAPTIONS: list(w.captions.items()),
                    schema.WINDOW_ENHANCED_CAPTIONS: list(w.enhanced_captions.items()),
                }
                for w in c.windows
            ]
            for c in clips
        ],
        schema.EMBEDDINGS: [
            [(k, v.astype(vector_type).reshape(-1).tolist()) for k, v in c.embeddings.items()] for c in clips
        ],
        schema.MOTION_GLOBAL_MEAN: [c.motion_score_global_mean for c in clips],
        schema.MOTION_PER_PATCH_MIN_256: [c.motion_score_per_patch_min_256 for c in clips],
        schema.AESTHETIC_SCORE: [c.aesthetic_score for c in clips],
        schema.ERRORS: [list(c.errors.items()) if c.errors else None for c in clips],
        schema.EXTRA_METADATA: [json.dumps(c.extra_metadata) if c.extra_metadata is not None else None for c in clips],
    }
    return pa.RecordBatch.from_pydict(columns, schema=arrow_schema)


def _arrow_schema(info: VideoInfo | None) -> pa.Schema:
    """The contract's schema, its vectors as wide as the widest declared embedding dtype (float32 at least).

    Float16 vectors are stored as float32, which holds them exactly (Parquet's FLOAT16 is too new for
    many readers); the declared layout restores their dtype and shape when they are read.
    """
    declared = [layout.dtype for layout in info.embedding_layouts.values()] if info is not None else []
    width = np.result_type(np.float32, *declared)
    if width == np.float32:
        return schema.ARROW_SCHEMA
    index = schema.ARROW_SCHEMA.get_field_index(schema.EMBEDDINGS)
    vectors = pa.field(schema.EMBEDDINGS, pa.map_(pa.string(), pa.list_(pa.from_numpy_dtype(width))))
    return schema.ARROW_SCHEMA.set(index, vectors)


@functools.cache
def _compression() -> dict[str, str]:
    """zstd per Parquet leaf column, except the MP4 and WebP bytes, which are compressed already:
    squeezing them again costs CPU on every write and read and saves nothing."""
    sink = io.BytesIO()
    pq.write_table(schema.ARROW_SCHEMA.empty_table(), sink)
    parquet_schema = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    leaves = [parquet_schema.column(i).path for i in range(len(parquet_schema))]
    media = {schema.MP4, f"{schema.WINDOWS}.list.element.{schema.WINDOW_WEBP}"}
    return {leaf: "none" if leaf in media else "zstd" for leaf in leaves}


def _metadata_json(info: VideoInfo) -> bytes:
    return json.dumps(info.to_json()).encode()


def write_processed_video(
    destination: str | os.PathLike[str],
    info: VideoInfo | Callable[[], VideoInfo],
    clips: Iterable[ClipRecord],
    *,
    row_group_size: int = 8,
) -> Path:
    """Write one processed-video file atomically and return its path.

    `clips` may be a generator; at most `row_group_size` clips are held at once. `info` may be a
    callable, called once every clip is written, for producers whose counters (filtered clips per
    chunk) are only known at the end: the metadata then goes into the footer's key-value metadata
    only; known up front, it is also Arrow schema metadata, which survives `pq.read_table` round trips.
    Embedding layouts wider than float32 must be known up front (they decide the column's type).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    try:
        _write(temp_name, info, clips, row_group_size)
        Path(temp_name).replace(destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return destination


def processed_video_bytes(info: VideoInfo, clips: Iterable[ClipRecord], *, row_group_size: int = 8) -> bytes:
    """One processed-video file (or chunk file) in memory, for producers that publish it with one
    atomic storage write (`Storage.put`: a rename locally, one PUT or a completed upload on S3)."""
    sink = io.BytesIO()
    _write(sink, info, clips, row_group_size)
    return sink.getvalue()


def _write(
    sink: str | io.BytesIO, info: VideoInfo | Callable[[], VideoInfo], clips: Iterable[ClipRecord], row_group_size: int
) -> None:
    arrow_schema = _arrow_schema(None if callable(info) else info)
    if not callable(info):
        arrow_schema = arrow_schema.with_metadata({schema.METADATA_KEY: _metadata_json(info)})
    with pq.ParquetWriter(sink, arrow_schema, compression=_compression()) as writer:
        pending: list[ClipRecord] = []
        for clip in clips:
            pending.append(clip)
            if len(pending) >= row_group_size:
                writer.write_batch(_batch(pending, arrow_schema))
                pending = []
        if pending:
            writer.write_batch(_batch(pending, arrow_schema))
        if callable(info):
            final = info()
            if _arrow_schema(final) != _arrow_schema(None):
                raise ValueError("embedding layouts wider than float32 must be known before the first clip")
            writer.add_key_value_metadata({schema.METADATA_KEY: _metadata_json(final)})
