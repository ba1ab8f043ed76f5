"""Per-video summary: `processed_videos/{rel}.json` and `processed_clip_chunks/{rel}_{chunk}.json`.

The counters follow NeMo's ClipStats: passed = passed clips; transcoded = clips (passed or filtered)
with MP4 bytes; with_webp = passed clips with at least one WebP; with_embeddings = passed clips with
an embedding of the configured algorithm; with_caption = clips (passed or filtered, as NeMo counts in
its metadata writer) with a caption of a listed model; durations run over passed and filtered clips,
summed in NeMo's order (passed clips, then filtered ones) so the float totals match to the last bit.
Both files are written on a dry run too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from clip_assets import layout
from clip_assets.contract import ClipRecord, VideoInfo, schema
from clip_assets.families import clip_embeddings, clip_files, clip_previews
from clip_assets.families.base import (
    Artifact,
    BuildReport,
    ClipFacts,
    OutputFamily,
    Problem,
    RecordedOutputs,
    VideoContext,
    json_artifact,
    verify_json,
)
from clip_assets.families.captions import caption_models_in_order, has_caption
from clip_assets.settings import WriterSettings


@dataclass
class ChunkStats:
    """What one clip chunk's JSON reports; accumulated clip by clip."""

    index: int
    num_passed: int = 0
    num_transcoded: int = 0
    num_with_embeddings: int = 0
    num_with_caption: int = 0
    num_with_webp: int = 0
    passed_duration: float = 0.0
    filtered_durations: list[float] = field(default_factory=list)
    max_clip_duration: float = 0.0
    filtered_by: Counter[str] = field(default_factory=Counter)
    clips: list[str] = field(default_factory=list)
    filtered_clips: list[str] = field(default_factory=list)
    all_windows: dict[str, dict[str, str]] = field(default_factory=dict)
    all_windows_enhanced_caption: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def total_clip_duration(self) -> float:
        total = self.passed_duration
        for duration in self.filtered_durations:
            total += duration
        return total

    def add(self, clip: ClipRecord, facts: ClipFacts, settings: WriterSettings) -> None:
        self.max_clip_duration = max(self.max_clip_duration, clip.duration)
        if facts.has_mp4:
            self.num_transcoded += 1
        if clip.filtered:
            self.filtered_clips.append(clip.uuid)
            self.filtered_durations.append(clip.duration)
            self.filtered_by[clip.filtered_by or "unknown"] += 1
            self.num_with_caption += int(has_caption(clip.windows, settings.caption_models))
            return
        self.passed_duration += clip.duration
        self.num_passed += 1
        self.clips.append(clip.uuid)
        if settings.embedding_algorithm in facts.embedding_algorithms:
            self.num_with_embeddings += 1
        if facts.has_webp:
            self.num_with_webp += 1
        captions: dict[str, str] = {}
        enhanced: dict[str, str] = {}
        for window in clip.windows:
            window_key = f"{window.start_frame}_{window.end_frame}"
            models = caption_models_in_order(settings.caption_models, window.captions)
            if models:
                captions[window_key] = window.captions[models[0]]
            enhanced_models = caption_models_in_order(settings.enhanced_caption_models, window.enhanced_captions)
            if enhanced_models:
                enhanced[window_key] = window.enhanced_captions[enhanced_models[0]]
        self.num_with_caption += int(bool(captions))  # a window had a caption of a considered model
        self.all_windows[clip.uuid] = captions
        self.all_windows_enhanced_caption[clip.uuid] = enhanced


class VideoSummaries:
    """Needs only the clips' identity and windows (captions); the rest comes from inspection's facts.

    Every chunk NeMo would have written a file for gets one: those in `num_clip_chunks`, those named
    in the file's `chunks`, those clips belong to, and chunk 0 for a video without clips.
    """

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.video = video
        self.report = report
        info = video.info
        self.chunks: dict[int, ChunkStats] = {i: ChunkStats(i) for i in range(info.num_clip_chunks)}
        for counters in info.chunks or ():
            self.chunks.setdefault(counters.index, ChunkStats(counters.index))

    def add(self, clip: ClipRecord) -> Iterable[Artifact]:
        stats = self.chunks.setdefault(clip.chunk_index, ChunkStats(clip.chunk_index))
        stats.add(clip, self.video.facts[clip.uuid], self.video.settings)
        return ()

    def finish(self) -> Iterable[Artifact]:
        info = self.video.info
        relative = layout.video_relative_path(info.source_video, self.video.settings.input_path)
        if not self.chunks:
            self.chunks[0] = ChunkStats(0)
        artifacts = [json_artifact(layout.video_metadata_key(relative), video_document(info))]
        for index in sorted(self.chunks):
            stats = self.chunks[index]
            self.report.counts["chunks"] += 1
            self.report.counts["clips_passed"] += stats.num_passed
            self.report.counts["clips_filtered"] += len(stats.filtered_clips)
            artifacts.append(json_artifact(layout.chunk_stats_key(relative, index), chunk_document(stats, info)))
        return artifacts


def planned_keys(video: VideoContext) -> Iterator[str]:
    """The video's JSON and one per chunk: those of `num_clip_chunks`, of `chunks` and of its clips, or chunk 0."""
    info = video.info
    relative = layout.video_relative_path(info.source_video, video.settings.input_path)
    chunks = set(range(info.num_clip_chunks)) | {c.index for c in info.chunks or ()}
    chunks |= {facts.chunk_index for facts in video.facts.values()}
    yield layout.video_metadata_key(relative)
    for index in sorted(chunks or {0}):
        yield layout.chunk_stats_key(relative, index)


def video_document(video: VideoInfo) -> dict[str, Any]:
    return {
        "video": layout.nemo_video_path(video.source_video),
        "height": video.height,
        "width": video.width,
        "framerate": video.framerate,
        "num_frames": video.num_frames,
        "duration": video.duration,
        "video_codec": video.video_codec,
        "pixel_format": video.pixel_format,
        "audio_format": video.audio_codec,
        "num_total_clips": video.num_total_clips,
        "num_clip_chunks": video.num_clip_chunks,
    }


def chunk_document(stats: ChunkStats, video: VideoInfo) -> dict[str, Any]:
    """Filter counters come from the producer's `chunks` metadata when given, else from `filtered_by`."""
    recorded = {c.index: c for c in video.chunks} if video.chunks is not None else None
    if recorded is not None and stats.index in recorded:
        by_motion = recorded[stats.index].num_filtered_by_motion
        by_aesthetic = recorded[stats.index].num_filtered_by_aesthetic
    elif recorded is not None:
        by_motion = by_aesthetic = 0
    else:
        by_motion = stats.filtered_by["motion"]
        by_aesthetic = stats.filtered_by["aesthetic"]
    return {
        "video": layout.nemo_video_path(video.source_video),
        "clip_chunk_index": stats.index,
        "num_clips_filtered_by_motion": by_motion,
        "num_clips_filtered_by_aesthetic": by_aesthetic,
        "num_clips_passed": stats.num_passed,
        "num_clips_transcoded": stats.num_transcoded,
        "num_clips_with_embeddings": stats.num_with_embeddings,
        "num_clips_with_caption": stats.num_with_caption,
        "num_clips_with_webp": stats.num_with_webp,
        "total_clip_duration": stats.total_clip_duration,
        "max_clip_duration": stats.max_clip_duration,
        "clips": stats.clips,
        "filtered_clips": stats.filtered_clips,
        "all_windows": stats.all_windows,
        "all_windows_enhanced_caption": stats.all_windows_enhanced_caption,
    }


def cross_check(outputs: RecordedOutputs) -> list[Problem]:
    """Each chunk's counters agree with the files the other families recorded for its clips."""
    settings = outputs.settings
    previews = outputs.others.get(clip_previews.FAMILY.name)
    embeddings = outputs.others.get(clip_embeddings.FAMILY.name)
    clips_stored = outputs.others.get(clip_files.FAMILY.name)
    problems = []
    for key, doc in outputs.documents(layout.CHUNK_STATS):
        clips, filtered = list(doc.get("clips", [])), list(doc.get("filtered_clips", []))
        checks: list[tuple[str, int, int]] = [("num_clips_passed", int(doc.get("num_clips_passed", -1)), len(clips))]
        if not settings.dry_run:
            if previews is not None:
                folders = {preview.rsplit("/", 1)[0] + "/" for preview in previews}
                with_webp = sum(layout.preview_prefix(u) in folders for u in clips)
                checks.append(("num_clips_with_webp", int(doc.get("num_clips_with_webp", -1)), with_webp))
            if embeddings is not None:
                pickled = sum(layout.embedding_pickle_key(settings.embedding_algorithm, u) in embeddings for u in clips)
                checks.append(("num_clips_with_embeddings", int(doc.get("num_clips_with_embeddings", -1)), pickled))
            if clips_stored is not None and settings.upload_clips:
                stored = sum(layout.clip_key(u, filtered=False) in clips_stored for u in clips) + sum(
                    layout.clip_key(u, filtered=True) in clips_stored for u in filtered
                )
                checks.append(("num_clips_transcoded", int(doc.get("num_clips_transcoded", -1)), stored))
        for name, recorded, found in checks:
            if recorded != found:
                problems.append(Problem(key, f"{name} is {recorded}, the files say {found}"))
    return problems


FAMILY = OutputFamily(
    name="video_summaries",
    description="Per-video JSON (processed_videos/{rel}.json) and per-chunk stats "
    "(processed_clip_chunks/{rel}_{chunk}.json); written on dry runs too.",
    kinds=frozenset({"json"}),
    # Captions only: which clips have an MP4, a WebP or an embedding is known from inspection.
    columns=frozenset({schema.WINDOWS}),
    builder=VideoSummaries,
    verify=verify_json,
    cross_check=cross_check,
    planned_keys=planned_keys,
)
