"""`clips/` and `filtered_clips/`: each clip's MP4, streamed from the inbox to storage."""

from dagster import AssetExecutionContext

from clip_assets.artifacts import BuildReport
from clip_assets.artifacts.clip_files import build_clip_files
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import open_validated_video
from clip_assets.contract import schema
from clip_assets.io_manager import FamilyOutput
from clip_assets.resources import StorageResource, WriterSettingsResource


@family_asset(
    name="clip_files",
    kinds={"mp4"},
    description="Clip MP4s: clips/{uuid}.mp4 for passed clips, filtered_clips/{uuid}.mp4 for filtered ones "
    "(skipped when upload_clips is off or on a dry run).",
)
def clip_files(
    context: AssetExecutionContext,
    inbox: StorageResource,
    output: StorageResource,
    writer_settings: WriterSettingsResource,
) -> FamilyOutput:
    video = open_validated_video(context, inbox, output, writer_settings)
    report = BuildReport()
    artifacts = build_clip_files(video.clips([schema.MP4]), video.settings, report)
    return FamilyOutput(video.name, artifacts, report, video.settings.max_workers)
