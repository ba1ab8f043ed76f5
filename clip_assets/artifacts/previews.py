"""WebP previews: `previews/{uuid}/{start_frame}_{end_frame}.webp` for each window of a passed clip."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from clip_assets import layout
from clip_assets.artifacts.base import Artifact, BuildReport
from clip_assets.contract import ClipRecord
from clip_assets.settings import WriterSettings


def build_previews(clips: Iterable[ClipRecord], settings: WriterSettings, report: BuildReport) -> Iterator[Artifact]:
    """Filtered clips get no previews, as in NeMo; a missing WebP is reported when previews are expected."""
    for clip in clips:
        if clip.filtered:
            continue
        for window in clip.windows:
            if window.webp is None:
                if settings.generate_previews:
                    report.warn(
                        f"Clip {clip.uuid} window [{window.start_frame}, {window.end_frame}] has no webp, skipped"
                    )
                report.counts["windows_without_webp"] += 1
                continue
            report.counts["previews"] += 1
            if not settings.dry_run:
                artifact = Artifact(layout.preview_key(clip.uuid, window.start_frame, window.end_frame), window.webp)
                if report.sample is None:
                    report.sample = artifact
                yield artifact
