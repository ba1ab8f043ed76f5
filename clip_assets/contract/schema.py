"""Column names, types and file-level metadata of the processed-video format, versions 1 and 2.

This module is the only place that knows a column name of the input contract.
"""

from __future__ import annotations

import pyarrow as pa

# What the writer writes; the reader also reads every earlier version.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
# File-level metadata keys that version 2 introduced (a version 1 file may not use them).
CHUNK_INDEX_KEY = "chunk_index"
EMBEDDING_LAYOUTS_KEY = "embeddings"
# The dtypes an embedding may declare (`clip_assets.embeddings.<algorithm>.dtype`).
EMBEDDING_DTYPES = ("float16", "float32", "float64")
# Parquet footer key-value metadata key (Arrow schema metadata lands there too).
METADATA_KEY = b"clip_assets"

CLIP_UUID = "clip_uuid"
CHUNK_INDEX = "chunk_index"
SPAN_START = "span_start"
SPAN_END = "span_end"
FILTERED = "filtered"
FILTERED_BY = "filtered_by"
MP4 = "mp4"
WINDOWS = "windows"
EMBEDDINGS = "embeddings"
MOTION_GLOBAL_MEAN = "motion_score_global_mean"
MOTION_PER_PATCH_MIN_256 = "motion_score_per_patch_min_256"
AESTHETIC_SCORE = "aesthetic_score"
ERRORS = "errors"
EXTRA_METADATA = "extra_metadata"

WINDOW_START_FRAME = "start_frame"
WINDOW_END_FRAME = "end_frame"
WINDOW_WEBP = "webp"
WINDOW_CAPTIONS = "captions"
WINDOW_ENHANCED_CAPTIONS = "enhanced_captions"

# Pseudo-column for projection: the windows without their WebP bytes are cheap, the bytes are not,
# so readers ask for them separately.
WINDOW_WEBP_COLUMN = "windows.webp"

WINDOW_TYPE = pa.struct(
    [
        pa.field(WINDOW_START_FRAME, pa.int32(), nullable=False),
        pa.field(WINDOW_END_FRAME, pa.int32(), nullable=False),
        pa.field(WINDOW_WEBP, pa.binary()),
        pa.field(WINDOW_CAPTIONS, pa.map_(pa.string(), pa.string())),
        pa.field(WINDOW_ENHANCED_CAPTIONS, pa.map_(pa.string(), pa.string())),
    ]
)

ARROW_SCHEMA = pa.schema(
    [
        pa.field(CLIP_UUID, pa.string()),
        pa.field(CHUNK_INDEX, pa.int32(), nullable=False),
        pa.field(SPAN_START, pa.float64(), nullable=False),
        pa.field(SPAN_END, pa.float64(), nullable=False),
        pa.field(FILTERED, pa.bool_(), nullable=False),
        pa.field(FILTERED_BY, pa.string()),
        pa.field(MP4, pa.binary()),
        pa.field(WINDOWS, pa.list_(WINDOW_TYPE)),
        pa.field(EMBEDDINGS, pa.map_(pa.string(), pa.list_(pa.float32()))),
        pa.field(MOTION_GLOBAL_MEAN, pa.float64()),
        pa.field(MOTION_PER_PATCH_MIN_256, pa.float64()),
        pa.field(AESTHETIC_SCORE, pa.float64()),
        pa.field(ERRORS, pa.map_(pa.string(), pa.string())),
        pa.field(EXTRA_METADATA, pa.string()),
    ]
)

COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
# Columns every projection carries: they identify a clip and decide where its files go.
IDENTITY_COLUMNS: tuple[str, ...] = (CLIP_UUID, CHUNK_INDEX, SPAN_START, SPAN_END, FILTERED, FILTERED_BY)
# Columns a file may omit (every clip then has none of that data).
OPTIONAL_COLUMNS: frozenset[str] = frozenset(
    {
        CLIP_UUID,
        FILTERED_BY,
        MP4,
        WINDOWS,
        EMBEDDINGS,
        MOTION_GLOBAL_MEAN,
        MOTION_PER_PATCH_MIN_256,
        AESTHETIC_SCORE,
        ERRORS,
        EXTRA_METADATA,
    }
)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)

VIDEO_FIELDS: tuple[str, ...] = (
    "width",
    "height",
    "framerate",
    "num_frames",
    "duration",
    "video_codec",
    "pixel_format",
    "audio_codec",
)
