"""`processed_videos/` and `processed_clip_chunks/`: per-video metadata and per-chunk stats."""

from dagster import AssetExecutionContext

from clip_assets.artifacts import BuildReport
from clip_assets.artifacts.video_summary import build_video_summary
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import open_validated_video
from clip_assets.contract import schema
from clip_assets.io_manager import FamilyOutput
from clip_assets.resources import StorageResource, WriterSettingsResource

_COLUMNS = [schema.MP4, schema.WINDOWS, schema.WINDOW_WEBP_COLUMN, schema.EMBEDDINGS]


@family_asset(
    name="video_summaries",
    kinds={"json"},
    description="Per-video JSON (processed_videos/{rel}.json) and per-chunk stats "
    "(processed_clip_chunks/{rel}_{chunk}.json); written on dry runs too.",
)
def video_summaries(
    context: AssetExecutionContext,
    inbox: StorageResource,
    output: StorageResource,
    writer_settings: WriterSettingsResource,
) -> FamilyOutput:
    video = open_validated_video(context, inbox, output, writer_settings)
    report = BuildReport()
    artifacts = build_video_summary(video.clips(_COLUMNS), video.info, video.settings, report)
    return FamilyOutput(video.name, artifacts, report, video.settings.max_workers)
