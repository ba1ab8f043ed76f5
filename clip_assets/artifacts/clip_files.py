"""Clip MP4s: `clips/{uuid}.mp4` for passed clips, `filtered_clips/{uuid}.mp4` for filtered ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from clip_assets import layout
from clip_assets.artifacts.base import Artifact, BuildReport
from clip_assets.contract import ClipRecord
from clip_assets.settings import WriterSettings


def build_clip_files(clips: Iterable[ClipRecord], settings: WriterSettings, report: BuildReport) -> Iterator[Artifact]:
    """Lazily, so a long video's MP4s stream through one at a time."""
    for clip in clips:
        if clip.mp4 is None:
            report.warn(f"Clip {clip.uuid} has no buffer, skip uploading")
            report.counts["without_mp4"] += 1
            continue
        if not settings.upload_clips or settings.dry_run:
            report.counts["not_uploaded"] += 1
            continue
        report.counts["filtered_clips" if clip.filtered else "clips"] += 1
        yield Artifact(layout.clip_key(clip.uuid, filtered=clip.filtered), clip.mp4)
