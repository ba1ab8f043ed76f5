"""Clip metadata JSON (`metas/v0/{uuid}.json`) for every passed and filtered clip.

Key order and meaning follow NeMo's `_write_clip_metadata`, with two documented improvements:
`num_frames` is the exact count of frames in the MP4 (NeMo: `int(duration * fps)`), and `errors`
keeps messages (`{key: message}`; NeMo keeps only the keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from clip_assets import layout
from clip_assets.artifacts.base import Artifact, BuildReport, json_artifact
from clip_assets.artifacts.captions import caption_models_in_order, has_caption
from clip_assets.contract import ClipRecord, VideoInfo, Window
from clip_assets.inspection import ClipFacts
from clip_assets.settings import WriterSettings


def clip_metadata(clip: ClipRecord, video: VideoInfo, settings: WriterSettings, facts: ClipFacts) -> dict[str, Any]:
    """One clip's metadata document; MP4 facts come from inspection, which probed every clip once."""
    doc: dict[str, Any] = {
        "span_uuid": clip.uuid,
        "source_video": clip_source_video(video),
        "duration_span": [clip.span_start, clip.span_end],
        "width_source": video.width,
        "height_source": video.height,
        "framerate_source": video.framerate,
        "clip_location": layout.full_location(
            settings.output_location, layout.clip_key(clip.uuid, filtered=clip.filtered)
        ),
    }
    if facts.probe is not None:
        doc.update(
            width=facts.probe.width,
            height=facts.probe.height,
            framerate=facts.probe.framerate,
            num_frames=facts.probe.num_frames,
            video_codec=facts.probe.video_codec,
            num_bytes=facts.mp4_bytes,
        )
    if clip.motion_score_global_mean is not None:
        doc["motion_score"] = {
            "global_mean": clip.motion_score_global_mean,
            "per_patch_min_256": clip.motion_score_per_patch_min_256,
        }
    if clip.aesthetic_score is not None:
        doc["aesthetic_score"] = clip.aesthetic_score
    if clip.errors:
        doc["errors"] = dict(clip.errors)
    # Filtered clips normally come without windows; NeMo writes whatever windows a clip has.
    doc["windows"] = [_window_doc(w, settings) for w in clip.windows]
    doc["valid"] = facts.has_mp4 and len(clip.windows) > 0
    if clip.extra_metadata:
        doc.update(clip.extra_metadata)
    return doc


def clip_source_video(video: VideoInfo) -> str:
    """NeMo's clips carry the video path as the splitting stage saw it (`str(Path)` for local paths)."""
    return layout.nemo_video_path(video.source_video)


def _window_doc(window: Window, settings: WriterSettings) -> dict[str, Any]:
    doc: dict[str, Any] = {"start_frame": window.start_frame, "end_frame": window.end_frame}
    for model in caption_models_in_order(settings.caption_models, window.captions):
        doc[f"{model}_caption"] = window.captions[model]
    for model in caption_models_in_order(settings.enhanced_caption_models, window.enhanced_captions):
        doc[f"{model}_enhanced_caption"] = window.enhanced_captions[model]
    return doc


def build_clip_metadata(
    clips: Iterable[ClipRecord],
    video: VideoInfo,
    settings: WriterSettings,
    report: BuildReport,
    facts: Mapping[str, ClipFacts],
) -> Iterator[Artifact]:
    """Clips need no MP4 bytes here: inspection probed them and left the facts."""
    for clip in clips:
        report.counts["filtered" if clip.filtered else "passed"] += 1
        if settings.generate_captions and not clip.filtered and not has_caption(clip.windows, settings.caption_models):
            report.warn(f"Clip {clip.uuid} has no caption from {list(settings.caption_models or ['any model'])}")
        document = clip_metadata(clip, video, settings, facts[clip.uuid])
        if not settings.dry_run:
            yield json_artifact(layout.clip_metadata_key(clip.uuid), document)
