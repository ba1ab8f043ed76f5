"""A dataset's sensors: new or changed processed videos become partitions and runs; the summary follows."""

from dagster import (
    AssetObservation,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from clip_assets.components.jobs import curate_job_name
from clip_assets.components.names import DATASET_GROUP, DatasetNames
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG, video_partitions
from clip_assets.components.resources import StorageResource
from clip_assets.engine.discovery import DiscoveryCursor, batch_runs, discover, unknown_partition_keys
from clip_assets.storage import Storage

# The tag that makes an observation a data version (Dagster's own name; it exports no constant for it).
DATA_VERSION_TAG = "dagster/data_version"


def evaluate_inbox(
    context: SensorEvaluationContext, inbox: Storage, names: DatasetNames, partitions_per_run: int
) -> SensorResult:
    """One tick: list the inbox from the cursor, register new files as partitions, request runs in ranges."""
    result = discover(inbox, DiscoveryCursor.parse(context.cursor))
    if result.incomplete:
        context.log.info(f"skipping {len(result.incomplete)} incomplete files, e.g. {result.incomplete[0]}")
    if result.waiting:
        context.log.info(f"{len(result.waiting)} chunked videos not yet complete, e.g. {result.waiting[0]}")
    known = context.instance.get_dynamic_partitions(names.partitions)
    new_keys = unknown_partition_keys(known, result.videos)
    run_requests = []
    for batch in batch_runs(result.videos, [*known, *new_keys], partitions_per_run):
        if len(batch.videos) == 1:
            run_requests.append(RunRequest(partition_key=batch.first, run_key=batch.run_key))
        else:
            tags = {RANGE_START_TAG: batch.first, RANGE_END_TAG: batch.last}
            run_requests.append(RunRequest(run_key=batch.run_key, tags=tags))
    partitions = video_partitions(names.partitions)
    # Each new or changed file's fingerprint is the inbox partition's data version, so the UI marks the
    # output partitions written from an older version as stale.
    observations = [
        AssetObservation(
            names.key("processed_videos"),
            partition=video.partition_key,
            tags={DATA_VERSION_TAG: video.fingerprint},
            metadata={"dagster/uri": MetadataValue.path(f"{inbox.root}/{video.key}")},
        )
        for video in result.videos
    ]
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
        asset_events=observations,
        cursor=result.cursor.to_str(),
    )


def inbox_sensor(names: DatasetNames, partitions_per_run: int, interval_s: int) -> SensorDefinition:
    @sensor(
        name=names.name("processed_video_sensor"),
        job_name=curate_job_name(names),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={names.inbox},
        description="Registers complete processed videos in the inbox as partitions and requests runs for the new "
        f"or changed ones, up to {partitions_per_run} consecutive partitions per run (run key = partitions + size "
        "+ mtime/ETag, so a rewrite runs again and a repeat never does).",
    )
    def processed_video_sensor(context: SensorEvaluationContext) -> SensorResult:
        inbox: StorageResource = getattr(context.resources, names.inbox)
        return evaluate_inbox(context, inbox.get_storage(), names, partitions_per_run)

    return processed_video_sensor


def summary_automation(names: DatasetNames) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        names.name("dataset_summary_automation"),
        target=AssetSelection.groups(names.group(DATASET_GROUP)),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Re-rolls the dataset's roll-ups (their `eager` condition) after partitions were written.",
    )
