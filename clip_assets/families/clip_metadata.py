"""`metas/v0/`: one JSON document per passed and filtered clip, MP4 facts probed in process.

Key order and meaning follow NeMo's `_write_clip_metadata`, with two documented improvements:
`num_frames` is the exact count of frames in the MP4 (NeMo: `int(duration * fps)`), and `errors`
keeps messages (`{key: message}`; NeMo keeps only the keys). This module is the one place that knows
the document's keys, and so also who owns a clip id: the video its document names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from clip_assets import layout
from clip_assets.contract import ClipRecord, ProcessedVideoError, VideoInfo, Window, schema
from clip_assets.families import clip_files
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

# The keys the writer itself produces, in NeMo's order; `extra_metadata` may add others, never these.
SPAN_UUID = "span_uuid"
SOURCE_VIDEO = "source_video"
CLIP_LOCATION = "clip_location"
WINDOWS = "windows"
WRITER_KEYS = (
    SPAN_UUID,
    SOURCE_VIDEO,
    "duration_span",
    "width_source",
    "height_source",
    "framerate_source",
    CLIP_LOCATION,
    "width",
    "height",
    "framerate",
    "num_frames",
    "video_codec",
    "num_bytes",
    "motion_score",
    "aesthetic_score",
    "errors",
    WINDOWS,
    "valid",
)


def clip_source_video(video: VideoInfo) -> str:
    """NeMo's clips carry the video path as the splitting stage saw it (`str(Path)` for local paths)."""
    return layout.nemo_video_path(video.source_video)


def owner(document: bytes) -> str | None:
    """The video a stored clip document belongs to (its `source_video`), or None if it names none."""
    value = json.loads(document).get(SOURCE_VIDEO)
    return value if isinstance(value, str) else None


def clip_metadata(clip: ClipRecord, video: VideoInfo, settings: WriterSettings, facts: ClipFacts) -> dict[str, Any]:
    """One clip's metadata document; MP4 facts come from inspection, which probed every clip once."""
    doc: dict[str, Any] = {
        SPAN_UUID: clip.uuid,
        SOURCE_VIDEO: clip_source_video(video),
        "duration_span": [clip.span_start, clip.span_end],
        "width_source": video.width,
        "height_source": video.height,
        "framerate_source": video.framerate,
        CLIP_LOCATION: layout.full_location(
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
    doc[WINDOWS] = [_window_doc(w, settings) for w in clip.windows]
    doc["valid"] = facts.has_mp4 and len(clip.windows) > 0
    if clip.extra_metadata:
        doc.update(clip.extra_metadata)
    return doc


def _window_doc(window: Window, settings: WriterSettings) -> dict[str, Any]:
    doc: dict[str, Any] = {"start_frame": window.start_frame, "end_frame": window.end_frame}
    for model in caption_models_in_order(settings.caption_models, window.captions):
        doc[f"{model}_caption"] = window.captions[model]
    for model in caption_models_in_order(settings.enhanced_caption_models, window.enhanced_captions):
        doc[f"{model}_enhanced_caption"] = window.enhanced_captions[model]
    return doc


class ClipMetadata:
    """Clips need no MP4 bytes here: inspection probed them and left the facts."""

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.video = video
        self.report = report

    def add(self, clip: ClipRecord) -> Iterable[Artifact]:
        settings = self.video.settings
        self.report.counts["filtered" if clip.filtered else "passed"] += 1
        if settings.generate_captions and not clip.filtered and not has_caption(clip.windows, settings.caption_models):
            self.report.warn(f"Clip {clip.uuid} has no caption from {list(settings.caption_models or ['any model'])}")
        document = clip_metadata(clip, self.video.info, settings, self.video.facts[clip.uuid])
        if settings.dry_run:
            return ()
        return (json_artifact(layout.clip_metadata_key(clip.uuid), document),)

    def finish(self) -> Iterable[Artifact]:
        return ()


def check_clip(file: str, clip: ClipRecord) -> None:
    """`extra_metadata` is merged into the document: it may add keys, never replace the writer's own."""
    if clip.extra_metadata is not None:
        clash = sorted(set(WRITER_KEYS) & clip.extra_metadata.keys())
        if clash:
            raise ProcessedVideoError(
                file,
                schema.EXTRA_METADATA,
                f"may not override the writer's keys {clash}",
                row=clip.row,
                clip_id=clip.uuid,
            )


def cross_check(outputs: RecordedOutputs) -> list[Problem]:
    """Each document names its own clip, and its `clip_location` exists where clip_files recorded it."""
    problems = []
    clips = outputs.others.get(clip_files.FAMILY.name)
    for key, doc in outputs.documents(layout.CLIP_METADATA):
        span_uuid = doc.get(SPAN_UUID)
        try:
            named = layout.clip_metadata_key(str(span_uuid))
        except layout.LayoutError:
            named = None
        if named != key:
            problems.append(Problem(key, f"span_uuid {span_uuid!r} does not match the file name"))
        location = str(doc.get(CLIP_LOCATION, ""))
        clip_key = location.removeprefix(outputs.root.rstrip("/") + "/")
        if clips is not None and clip_key in clips and not outputs.exists(clip_key):
            problems.append(Problem(key, f"clip_location {location} does not exist"))
    return problems


FAMILY = OutputFamily(
    name="clip_metadata",
    description="Clip metadata JSON (metas/v0/{uuid}.json): span, source facts, probed MP4 facts with the exact "
    "frame count, scores, errors, windows with captions, validity.",
    kinds=frozenset({"json"}),
    # No MP4 bytes: inspection probed every clip and kept the facts.
    columns=frozenset(
        {
            schema.WINDOWS,
            schema.MOTION_GLOBAL_MEAN,
            schema.MOTION_PER_PATCH_MIN_256,
            schema.AESTHETIC_SCORE,
            schema.ERRORS,
            schema.EXTRA_METADATA,
        }
    ),
    builder=ClipMetadata,
    verify=verify_json,
    cross_check=cross_check,
    check_clip=check_clip,
    planned_keys=lambda video: (layout.clip_metadata_key(clip) for clip in video.facts),
)
