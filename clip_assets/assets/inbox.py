"""The processed-video files themselves: an external asset, produced upstream, observed by discovery."""

from dagster import AssetSpec

from clip_assets.assets.partitions import processed_video_partitions

processed_videos = AssetSpec(
    "processed_videos",
    group_name="inbox",
    partitions_def=processed_video_partitions,
    kinds={"parquet"},
    description=(
        "Processed-video Parquet files (docs/processed-video-format.md) in the inbox, one partition per file, "
        "written by an upstream curation pipeline or `clip-assets ingest`. Registered by the "
        "`processed_video_sensor` or `clip-assets discover`."
    ),
)
