"""In-memory shapes of one processed video: its file-level metadata and its clip rows.

Plain dataclasses, no I/O: the reader builds them, the artifact builders consume them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ChunkCounters:
    """Upstream's filter counters for one clip chunk (NeMo's `num_filtered_by_*`)."""

    index: int
    num_filtered_by_motion: int
    num_filtered_by_aesthetic: int


@dataclass(frozen=True)
class EmbeddingLayout:
    """How one algorithm's vectors look upstream: NeMo pickles Cosmos-Embed1's float16 `(1, 768)` as it is.

    The `embeddings` column holds flat vectors; this restores their dtype and shape exactly.
    """

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class VideoInfo:
    """The file-level metadata: what NeMo keeps on its `Video` object."""

    source_video: str
    width: int | None = None
    height: int | None = None
    framerate: float | None = None
    num_frames: int | None = None
    duration: float | None = None
    video_codec: str | None = None
    pixel_format: str | None = None
    audio_codec: str | None = None
    num_total_clips: int = 0
    num_clip_chunks: int = 0
    # None when the producer did not record counters; they are then counted from `filtered_by`.
    chunks: tuple[ChunkCounters, ...] | None = None
    # Format 2: the clip chunk this file holds when the video arrives as chunk files, else None.
    chunk_index: int | None = None
    # Format 2: algorithm -> dtype and shape of its vectors; vectors of other algorithms stay flat.
    embedding_layouts: Mapping[str, EmbeddingLayout] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `clip_assets` schema-metadata object of the file format."""
        from clip_assets.contract.schema import CHUNK_INDEX_KEY, EMBEDDING_LAYOUTS_KEY, FORMAT_VERSION, VIDEO_FIELDS

        doc: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "source_video": self.source_video,
            "video": {name: getattr(self, name) for name in VIDEO_FIELDS},
            "num_total_clips": self.num_total_clips,
            "num_clip_chunks": self.num_clip_chunks,
        }
        if self.chunks is not None:
            doc["chunks"] = [
                {
                    "index": c.index,
                    "num_filtered_by_motion": c.num_filtered_by_motion,
                    "num_filtered_by_aesthetic": c.num_filtered_by_aesthetic,
                }
                for c in self.chunks
            ]
        if self.chunk_index is not None:
            doc[CHUNK_INDEX_KEY] = self.chunk_index
        if self.embedding_layouts:
            doc[EMBEDDING_LAYOUTS_KEY] = {
                algorithm: {"dtype": layout.dtype, "shape": list(layout.shape)}
                for algorithm, layout in self.embedding_layouts.items()
            }
        return doc


@dataclass
class Window:
    """A preview/caption window of a clip; frames are relative to the clip."""

    start_frame: int
    end_frame: int
    # A view into the reader's batch when read (no copy), bytes when built by a producer.
    webp: bytes | memoryview | None = None
    captions: dict[str, str] = field(default_factory=dict)
    enhanced_captions: dict[str, str] = field(default_factory=dict)


@dataclass
class ClipRecord:
    """One clip row. Fields the reader was not asked to project stay at their empty default."""

    row: int
    uuid: str
    chunk_index: int
    span_start: float
    span_end: float
    filtered: bool
    filtered_by: str | None = None
    mp4: bytes | memoryview | None = None
    windows: list[Window] = field(default_factory=list)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    motion_score_global_mean: float | None = None
    motion_score_per_patch_min_256: float | None = None
    aesthetic_score: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
    extra_metadata: dict[str, Any] | None = None

    @property
    def duration(self) -> float:
        return self.span_end - self.span_start
