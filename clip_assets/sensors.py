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

from clip_assets.assets.family import PARTITIONS_PER_RUN
from clip_assets.assets.partitions import (
    PARTITIONS_NAME,
    RANGE_END_TAG,
    RANGE_START_TAG,
    processed_video_partitions,
)
from clip_assets.discovery import DiscoveryCursor, batch_runs, discover, unknown_partition_keys
from clip_assets.environment import SENSOR_INTERVAL_VAR, configured
from clip_assets.jobs import curate_videos
from clip_assets.resources import StorageResource


@sensor(
    job=curate_videos,
    minimum_interval_seconds=int(configured(SENSOR_INTERVAL_VAR)),
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers complete processed videos in the inbox as partitions and requests runs for the new or "
    "changed ones, up to CLIP_ASSETS_PARTITIONS_PER_RUN consecutive partitions per run (run key = partitions + "
    "size + mtime/ETag, so a rewrite runs again and a repeat never does).",
)
def processed_video_sensor(context: SensorEvaluationContext, inbox: StorageResource) -> SensorResult:
    result = discover(inbox.get_storage(), DiscoveryCursor.parse(context.cursor))
    if result.incomplete:
        context.log.info(f"skipping {len(result.incomplete)} incomplete files, e.g. {result.incomplete[0]}")
    known = context.instance.get_dynamic_partitions(PARTITIONS_NAME)
    new_keys = unknown_partition_keys(known, result.videos)
    run_requests = []
    for batch in batch_runs(result.videos, [*known, *new_keys], PARTITIONS_PER_RUN):
        if len(batch.videos) == 1:
            run_requests.append(RunRequest(partition_key=batch.first, run_key=batch.run_key))
        else:
            tags = {RANGE_START_TAG: batch.first, RANGE_END_TAG: batch.last}
            run_requests.append(RunRequest(run_key=batch.run_key, tags=tags))
    return SensorResult(
        run_requests=run_requests,
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
