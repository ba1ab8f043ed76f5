"""Sensors: new or changed processed videos become partitions and runs; the dataset summary follows."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from clip_assets.assets.partitions import PARTITIONS_NAME, processed_video_partitions
from clip_assets.discovery import DiscoveryCursor, discover, unknown_partition_keys
from clip_assets.jobs import curate_videos
from clip_assets.resources import StorageResource


@sensor(
    job=curate_videos,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers complete processed videos in the inbox as partitions and requests a run for each "
    "new or changed one (run key = partition + size + mtime/ETag, so a rewrite runs again).",
)
def processed_video_sensor(context: SensorEvaluationContext, inbox: StorageResource) -> SensorResult:
    result = discover(inbox.get_storage(), DiscoveryCursor.parse(context.cursor))
    if result.incomplete:
        context.log.info(f"skipping {len(result.incomplete)} incomplete files, e.g. {result.incomplete[0]}")
    new_keys = unknown_partition_keys(context.instance, PARTITIONS_NAME, result.videos)
    return SensorResult(
        run_requests=[
            RunRequest(partition_key=v.partition_key, run_key=f"{v.partition_key}@{v.fingerprint}")
            for v in result.videos
        ],
        dynamic_partitions_requests=[processed_video_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=result.cursor.to_str(),
    )


dataset_summary_automation = AutomationConditionSensorDefinition(
    "dataset_summary_automation",
    target=AssetSelection.assets("dataset_summary"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Re-rolls the dataset summary (its `eager` condition) after partitions were written.",
)
