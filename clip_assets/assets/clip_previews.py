"""`previews/`: one animated WebP per window of each passed clip, with a thumbnail in the UI."""

import base64
import io
from collections.abc import Iterable
from typing import Any

from dagster import MetadataValue
from PIL import Image

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.previews import build_previews
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import ValidatedVideo
from clip_assets.contract import schema


def _thumbnail(report: BuildReport) -> dict[str, Any]:
    """The first preview's first frame as an inline PNG: the UI renders data-URI images in markdown."""
    if report.sample is None:
        return {}
    with Image.open(io.BytesIO(report.sample.data)) as image:
        frame = image.convert("RGB")
        frame.thumbnail((320, 240))
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"preview": MetadataValue.md(f"`{report.sample.key}`\n\n![preview](data:image/png;base64,{encoded})")}


@family_asset(
    name="clip_previews",
    kinds={"webp"},
    description="WebP previews: previews/{uuid}/{start_frame}_{end_frame}.webp for every window of a passed clip.",
    describe=_thumbnail,
)
def clip_previews(video: ValidatedVideo, report: BuildReport) -> Iterable[Artifact]:
    return build_previews(video.clips([schema.WINDOWS, schema.WINDOW_WEBP_COLUMN]), video.settings, report)
