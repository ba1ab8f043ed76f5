"""NeMo Curator's video objects <-> processed-video rows: the one home of the rules, both ways.

`chunk_rows` turns one `VideoTask` (one clip chunk, as NeMo's transcoding stage hands it on) into the
file-level metadata and clip rows of a processed-video file; `video_tasks` turns a processed video
back into the `VideoTask`s NeMo's `ClipWriterStage` would have been given. Both are pure (no I/O) and
duck-typed on NeMo's attribute names, so the forward direction needs no NeMo import at all; the
reverse builds NeMo's own dataclasses and imports them when called.

What is carried, and how (NeMo Curator 1.4.0, `nemo_curator/tasks/video.py`):
- `Video.input_video` is the video path (`source_video`); `Video.metadata` the video fields;
  `num_total_clips`, `num_clip_chunks`, `clip_chunk_index`; `clip_stats.num_filtered_by_motion` and
  `num_filtered_by_aesthetic` the chunk's filter counters (`chunks`). NeMo records which filter
  removed a clip only in these counters, so a filtered clip's `filtered_by` stays null: the counters
  are the truth, and the chunk JSON reports them as NeMo's writer does.
- `Clip.uuid`, `span`, `buffer` (an empty buffer is no MP4, as NeMo's writer treats it), scores,
  `errors` (key -> message; NeMo's writer keeps only the keys), `windows` (frames, `webp_bytes`,
  `caption` and `enhanced_caption` by model).
- `Clip.cosmos_embed1_embedding` with its dtype and shape (NeMo's is float16 `(1, 768)`), as the
  `cosmos-embed1` vector plus its declared layout, so the pickle clip-assets writes is NeMo's, byte for
  byte. NeMo 1.4.0's `Clip` has no InternVideo2 field; `intern_video_2_embedding` (the name NeMo's
  video curation code uses elsewhere) is carried as `internvideo2` when a clip has it.
- Not carried, because no writer output depends on them: `Video.source_bytes`, `frame_array`,
  `metadata.size`/`bit_rate_k`, `Video.errors`, `extracted_frames`, `decoded_motion_data`,
  `cosmos_embed1_frames`, `egomotion`, `cosmos_embed1_text_match`, windows' `mp4_bytes`,
  `llm_inputs`, `x1_input`.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from clip_assets.contract import ClipRecord, EmbeddingLayout, VideoInfo, Window
from clip_assets.contract.records import ChunkCounters
from clip_assets.contract.schema import VIDEO_FIELDS

if TYPE_CHECKING:
    from nemo_curator.tasks.video import Clip, Video, VideoTask

COSMOS_EMBED1 = "cosmos-embed1"
INTERNVIDEO2 = "internvideo2"
# Contract algorithm name -> the `Clip` attribute holding its vector.
EMBEDDING_ATTRIBUTES = {COSMOS_EMBED1: "cosmos_embed1_embedding", INTERNVIDEO2: "intern_video_2_embedding"}


class MappingError(ValueError):
    """A NeMo object that cannot become a processed-video row; the message names the video and clip."""


def source_video(video: Video) -> str:
    """The video path as NeMo's writer spells it (`input_video.as_posix()` for a `Path`)."""
    path = video.input_video
    return path.as_posix() if isinstance(path, pathlib.PurePath) else str(path)


def is_chunked(video: Video) -> bool:
    """Chunked videos come as one task per chunk (`num_clip_chunks` of them); others as one task."""
    return int(video.num_clip_chunks) > 0


def video_info(video: Video, clips: Sequence[ClipRecord] = ()) -> VideoInfo:
    """One task's file-level metadata: the video's facts, its chunk and that chunk's filter counters."""
    metadata = video.metadata
    stats = video.clip_stats
    index = int(video.clip_chunk_index)
    return VideoInfo(
        source_video=source_video(video),
        **{name: getattr(metadata, name) for name in VIDEO_FIELDS},
        num_total_clips=int(video.num_total_clips),
        num_clip_chunks=int(video.num_clip_chunks),
        chunks=(ChunkCounters(index, int(stats.num_filtered_by_motion), int(stats.num_filtered_by_aesthetic)),),
        chunk_index=index if is_chunked(video) else None,
        embedding_layouts=embedding_layouts(clips),
    )


def embedding_layouts(clips: Iterable[ClipRecord]) -> dict[str, EmbeddingLayout]:
    """Each algorithm's dtype and shape, from its vectors; one video's vectors of an algorithm share them."""
    layouts: dict[str, EmbeddingLayout] = {}
    for clip in clips:
        for algorithm, vector in clip.embeddings.items():
            layout = EmbeddingLayout(str(vector.dtype), tuple(int(n) for n in vector.shape))
            if layouts.setdefault(algorithm, layout) != layout:
                raise MappingError(
                    f"clip {clip.uuid}: {algorithm} embedding is {layout}, another clip's is {layouts[algorithm]}"
                )
    return layouts


def _bytes(value: bytes | None) -> bytes | None:
    return bytes(value) if value else None


def clip_record(clip: Clip, row: int, chunk_index: int, *, filtered: bool, video_path: str) -> ClipRecord:
    """One NeMo `Clip` as a row; its `source_video` must be its video's (NeMo writes both, they must agree)."""
    if str(clip.source_video) != video_path and pathlib.PurePath(str(clip.source_video)).as_posix() != video_path:
        raise MappingError(f"clip {clip.uuid}: source_video {clip.source_video!r} is not its video {video_path!r}")
    embeddings: dict[str, np.ndarray] = {}
    for algorithm, attribute in EMBEDDING_ATTRIBUTES.items():
        vector = getattr(clip, attribute, None)
        if vector is not None:
            embeddings[algorithm] = np.asarray(vector)
    start, end = clip.span
    return ClipRecord(
        row=row,
        uuid=str(clip.uuid),
        chunk_index=chunk_index,
        span_start=float(start),
        span_end=float(end),
        filtered=filtered,
        mp4=_bytes(clip.buffer),
        windows=[
            Window(
                start_frame=int(window.start_frame),
                end_frame=int(window.end_frame),
                webp=_bytes(window.webp_bytes),
                captions=dict(window.caption),
                enhanced_captions=dict(window.enhanced_caption),
            )
            for window in clip.windows
        ],
        embeddings=embeddings,
        motion_score_global_mean=clip.motion_score_global_mean,
        motion_score_per_patch_min_256=clip.motion_score_per_patch_min_256,
        aesthetic_score=clip.aesthetic_score,
        errors={str(key): str(message) for key, message in clip.errors.items()},
    )


def chunk_rows(task: VideoTask) -> tuple[VideoInfo, list[ClipRecord]]:
    """The processed-video metadata and rows of one task: passed clips first, then filtered ones, in
    NeMo's order (the writer sums durations in that order, so the float totals match to the last bit)."""
    video = task.data
    path = source_video(video)
    index = int(video.clip_chunk_index)
    clips = [
        clip_record(clip, row, index, filtered=filtered, video_path=path)
        for row, (clip, filtered) in enumerate(
            [*((c, False) for c in video.clips), *((c, True) for c in video.filtered_clips)]
        )
    ]
    return video_info(video, clips), clips


def _nemo_embedding(clip: ClipRecord, algorithm: str) -> np.ndarray | None:
    vector = clip.embeddings.get(algorithm)
    return None if vector is None else np.asarray(vector)


def nemo_clip(record: ClipRecord, video_path: str) -> Clip:
    """A row as the `Clip` NeMo's stages would have left for the writer (media bytes copied out of views)."""
    from nemo_curator.tasks.video import Clip, _Window

    clip = Clip(
        uuid=uuid.UUID(record.uuid),
        source_video=video_path,
        span=(record.span_start, record.span_end),
        buffer=None if record.mp4 is None else bytes(record.mp4),
        windows=[
            _Window(
                start_frame=w.start_frame,
                end_frame=w.end_frame,
                caption=dict(w.captions),
                enhanced_caption=dict(w.enhanced_captions),
                webp_bytes=None if w.webp is None else bytes(w.webp),
            )
            for w in record.windows
        ],
        cosmos_embed1_embedding=_nemo_embedding(record, COSMOS_EMBED1),
        motion_score_global_mean=record.motion_score_global_mean,
        motion_score_per_patch_min_256=record.motion_score_per_patch_min_256,
        aesthetic_score=record.aesthetic_score,
        errors=dict(record.errors),
    )
    return clip


def video_tasks(info: VideoInfo, clips: Iterable[ClipRecord], dataset_name: str = "clip-assets") -> list[VideoTask]:
    """A processed video as NeMo's writer would have been handed it: one `VideoTask` per clip chunk.

    Every chunk in `range(num_clip_chunks)` runs, rows or not, and chunk 0 always does (NeMo writes a
    clip-less video's JSON from it); a chunk file (`info.chunk_index` set) is its own chunk's task only.
    Filter counters come from `info.chunks`, else from `filtered_by`. Vectors of algorithms NeMo
    1.4.0's `Clip` cannot hold are left out.
    """
    from nemo_curator.tasks.video import ClipStats, Video, VideoMetadata, VideoTask

    path = info.source_video
    indexes = {0, *range(info.num_clip_chunks)} if info.chunk_index is None else {info.chunk_index}
    by_chunk: dict[int, tuple[list[Clip], list[Clip], list[str | None]]] = {index: ([], [], []) for index in indexes}
    for record in clips:
        passed, filtered, reasons = by_chunk.setdefault(record.chunk_index, ([], [], []))
        (filtered if record.filtered else passed).append(nemo_clip(record, path))
        if record.filtered:
            reasons.append(record.filtered_by)
    recorded = {c.index: c for c in info.chunks} if info.chunks is not None else None
    tasks = []
    for index, (passed, filtered, reasons) in sorted(by_chunk.items()):
        if recorded is not None:
            counters = recorded.get(index, ChunkCounters(index, 0, 0))
            motion, aesthetic = counters.num_filtered_by_motion, counters.num_filtered_by_aesthetic
        else:
            motion, aesthetic = reasons.count("motion"), reasons.count("aesthetic")
        video = Video(
            input_video=pathlib.Path(path),
            metadata=VideoMetadata(**{name: getattr(info, name) for name in VIDEO_FIELDS}),
            clips=passed,
            filtered_clips=filtered,
            num_total_clips=info.num_total_clips,
            num_clip_chunks=info.num_clip_chunks,
            clip_chunk_index=index,
            clip_stats=ClipStats(num_filtered_by_motion=motion, num_filtered_by_aesthetic=aesthetic),
        )
        tasks.append(VideoTask(dataset_name=dataset_name, data=video))
    return tasks
