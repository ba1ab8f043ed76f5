"""The main job: every output family of one processed video."""

from dagster import AssetSelection, define_asset_job

from clip_assets.assets.family import OUTPUT_GROUP

curate_videos = define_asset_job(
    "curate_videos",
    selection=AssetSelection.groups(OUTPUT_GROUP),
    description="Write all NeMo-compatible outputs of one processed video (one partition).",
)

summarize_dataset = define_asset_job(
    "summarize_dataset",
    selection=AssetSelection.assets("dataset_summary"),
    description="Roll every partition's outputs up into the dataset summary.",
)
