"""`previews/`: one animated WebP per window of each passed clip, with a thumbnail in the UI."""

import base64
import io
from collections.abc import Iterator
from typing import Any

from dagster import AssetExecutionContext, MetadataValue
from PIL import Image

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.previews import build_previews
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import open_validated_video
from clip_assets.contract import schema
from clip_assets.io_manager import FamilyOutput
from clip_assets.resources import StorageResource, WriterSettingsResource


def _thumbnail_markdown(webp: bytes, key: str) -> str:
    """The WebP's first frame as an inline PNG: the UI renders data-URI images in markdown."""
    with Image.open(io.BytesIO(webp)) as image:
        frame = image.convert("RGB")
        frame.thumbnail((320, 240))
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"`{key}`\n\n![preview](data:image/png;base64,{encoded})"


@family_asset(
    name="clip_previews",
    kinds={"webp"},
    description="WebP previews: previews/{uuid}/{start_frame}_{end_frame}.webp for every window of a passed clip.",
)
def clip_previews(
    context: AssetExecutionContext,
    inbox: StorageResource,
    output: StorageResource,
    writer_settings: WriterSettingsResource,
) -> FamilyOutput:
    video = open_validated_video(context, inbox, output, writer_settings)
    report = BuildReport()
    first: list[Artifact] = []

    def remember_first(artifacts: Iterator[Artifact]) -> Iterator[Artifact]:
        for artifact in artifacts:
            if not first:
                first.append(artifact)
            yield artifact

    def preview_metadata() -> dict[str, Any]:
        if not first:
            return {}
        return {"preview": MetadataValue.md(_thumbnail_markdown(first[0].data, first[0].key))}

    artifacts = build_previews(video.clips([schema.WINDOWS, schema.WINDOW_WEBP_COLUMN]), video.settings, report)
    return FamilyOutput(video.name, remember_first(artifacts), report, video.settings.max_workers, preview_metadata)
