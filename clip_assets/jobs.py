"""The main job: every output family of one processed video."""

from dagster import AssetSelection, define_asset_job

from clip_assets.assets.family import OUTPUT_GROUP

curate_videos = define_asset_job(
    "curate_videos",
    selection=AssetSelection.groups(OUTPUT_GROUP).without_checks(),
    description="Write all NeMo-compatible outputs of processed videos (one partition, or a range of them).",
)

verify_outputs = define_asset_job(
    "verify_outputs",
    selection=AssetSelection.all_asset_checks(),
    description="Read every output of a partition back and check it against its manifest (the `intact` checks).",
)

summarize_dataset = define_asset_job(
    "summarize_dataset",
    selection=AssetSelection.assets("dataset_summary"),
    description="Roll every partition's outputs up into the dataset summary.",
)
