"""`clips/` and `filtered_clips/`: each clip's MP4, streamed from the inbox to storage."""

from __future__ import annotations

from collections.abc import Iterable

from clip_assets import layout
from clip_assets.contract import ClipRecord, schema
from clip_assets.families.base import Artifact, BuildReport, Damaged, OutputFamily, VideoContext
from clip_assets.media.probe import MediaError, probe_mp4


class ClipFiles:
    """Passed clips to `clips/`, filtered ones to `filtered_clips/`; a clip without bytes is reported, as NeMo does."""

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.settings = video.settings
        self.report = report

    def add(self, clip: ClipRecord) -> Iterable[Artifact]:
        if clip.mp4 is None:
            self.report.warn(f"Clip {clip.uuid} has no buffer, skip uploading")
            self.report.counts["without_mp4"] += 1
            return ()
        if not self.settings.upload_clips or self.settings.dry_run:
            self.report.counts["not_uploaded"] += 1
            return ()
        self.report.counts["filtered_clips" if clip.filtered else "clips"] += 1
        return (Artifact(layout.clip_key(clip.uuid, filtered=clip.filtered), clip.mp4),)

    def finish(self) -> Iterable[Artifact]:
        return ()


def verify(key: str, data: bytes) -> None:
    """A stored clip still demuxes to a usable video."""
    try:
        probe_mp4(data)
    except MediaError as exc:
        raise Damaged(f"not a usable MP4 ({exc})") from None


FAMILY = OutputFamily(
    name="clip_files",
    description="Clip MP4s: clips/{uuid}.mp4 for passed clips, filtered_clips/{uuid}.mp4 for filtered ones "
    "(skipped when upload_clips is off or on a dry run).",
    kinds=frozenset({"mp4"}),
    columns=frozenset({schema.MP4}),
    builder=ClipFiles,
    verify=verify,
    planned_keys=lambda video: (
        layout.clip_key(clip, filtered=facts.filtered) for clip, facts in video.facts.items() if facts.has_mp4
    ),
)
