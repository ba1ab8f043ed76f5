"""`ce1_embd/`, `ce1_embd_parquet/` (or `iv2_*`, or the algorithm's own prefix): clip embeddings."""

from dagster import AssetExecutionContext

from clip_assets.artifacts import BuildReport
from clip_assets.artifacts.embeddings import build_embeddings
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import open_validated_video
from clip_assets.contract import schema
from clip_assets.io_manager import FamilyOutput
from clip_assets.resources import StorageResource, WriterSettingsResource


@family_asset(
    name="clip_embeddings",
    kinds={"pickle", "parquet"},
    description="Embeddings of the configured algorithm: a pickle per passed clip ({prefix}_embd/{uuid}.pickle) "
    "and a Parquet file per clip chunk ({prefix}_embd_parquet/{uuid5(video_chunk)}.parquet, columns id, embedding).",
)
def clip_embeddings(
    context: AssetExecutionContext,
    inbox: StorageResource,
    output: StorageResource,
    writer_settings: WriterSettingsResource,
) -> FamilyOutput:
    video = open_validated_video(context, inbox, output, writer_settings)
    report = BuildReport()
    artifacts = build_embeddings(video.clips([schema.EMBEDDINGS]), video.info.source_video, video.settings, report)
    return FamilyOutput(video.name, artifacts, report, video.settings.max_workers)
