"""`previews/`: one animated WebP per window of each passed clip, with a thumbnail in the UI."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping

from PIL import Image

from clip_assets import layout
from clip_assets.contract import ClipRecord, schema
from clip_assets.families.base import Artifact, BuildReport, Damaged, OutputFamily, VideoContext
from clip_assets.metadata import Markdown, MetadataEntry


class ClipPreviews:
    """Filtered clips get no previews, as in NeMo; a missing WebP is reported when previews are expected."""

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.settings = video.settings
        self.report = report

    def add(self, clip: ClipRecord) -> Iterable[Artifact]:
        if clip.filtered:
            return []
        artifacts = []
        for window in clip.windows:
            if window.webp is None:
                if self.settings.generate_previews:
                    self.report.warn(
                        f"Clip {clip.uuid} window [{window.start_frame}, {window.end_frame}] has no webp, skipped"
                    )
                self.report.counts["windows_without_webp"] += 1
                continue
            self.report.counts["previews"] += 1
            if not self.settings.dry_run:
                artifact = Artifact(layout.preview_key(clip.uuid, window.start_frame, window.end_frame), window.webp)
                if self.report.sample is None:
                    self.report.sample = artifact
                artifacts.append(artifact)
        return artifacts

    def finish(self) -> Iterable[Artifact]:
        return ()


# The inline thumbnail's bounding box: it is stored in every materialization event of the family, so
# it is kept small (a 320x240 frame was ~200 KB of base64 per event, encoded on every write).
THUMBNAIL_SIZE = (160, 120)


def thumbnail(report: BuildReport) -> Mapping[str, MetadataEntry]:
    """The first preview's first frame as an inline PNG: the UI renders data-URI images in Markdown."""
    if report.sample is None:
        return {}
    with Image.open(io.BytesIO(report.sample.data)) as image:
        frame = image.convert("RGB")
        frame.thumbnail(THUMBNAIL_SIZE)
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"preview": Markdown(f"`{report.sample.key}`\n\n![preview](data:image/png;base64,{encoded})")}


def verify(key: str, data: bytes) -> None:
    """Every frame of a stored preview still decodes."""
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise Damaged(f"does not decode as WebP ({exc})") from None


FAMILY = OutputFamily(
    name="clip_previews",
    description="WebP previews: previews/{uuid}/{start_frame}_{end_frame}.webp for every window of a passed clip.",
    kinds=frozenset({"webp"}),
    columns=frozenset({schema.WINDOWS, schema.WINDOW_WEBP_COLUMN}),
    builder=ClipPreviews,
    verify=verify,
    describe=thumbnail,
    planned_keys=lambda video: (
        layout.preview_key(clip, start, end) for clip, facts in video.facts.items() for start, end in facts.webp_windows
    ),
)
