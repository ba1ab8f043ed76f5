"""A dataset's jobs: write its outputs, verify them, roll them up."""

from dagster import AssetSelection, Definitions, define_asset_job

from clip_assets.components.names import OUTPUT_GROUP, DatasetNames


def curate_job_name(names: DatasetNames) -> str:
    """The main job: every output family of one processed video, or of a range of them."""
    return names.name("curate_videos")


def dataset_jobs(names: DatasetNames) -> Definitions:
    outputs = AssetSelection.groups(names.group(OUTPUT_GROUP))
    return Definitions(
        jobs=[
            define_asset_job(
                curate_job_name(names),
                selection=outputs.without_checks(),
                description="Write all NeMo-compatible outputs of processed videos (one partition, or a range).",
            ),
            define_asset_job(
                names.name("verify_outputs"),
                selection=outputs - outputs.without_checks(),
                description="Read every output of a partition back and check it against its manifest (the "
                "`intact` checks).",
            ),
            define_asset_job(
                names.name("summarize_dataset"),
                selection=AssetSelection.assets(names.key("dataset_summary")),
                description="Roll every partition's outputs up into the dataset summary.",
            ),
        ]
    )
