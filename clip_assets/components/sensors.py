"""A dataset's sensors: new or changed processed videos become partitions and runs, the checks follow each
successful write, the derived dataset follows the writes."""

from collections.abc import Sequence

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)

from clip_assets.components.assets import INPUT_FINGERPRINT
from clip_assets.components.jobs import DatasetJobs, curate_job_name
from clip_assets.components.names import DATASET_GROUP, DatasetNames
from clip_assets.components.partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, video_partitions
from clip_assets.components.resources import StorageResource
from clip_assets.engine.discovery import DiscoveredVideo, DiscoveryCursor, batch_runs, discover, unknown_partition_keys
from clip_assets.storage import Storage

# The tag that makes an observation a data version (Dagster's own name; it exports no constant for it).
DATA_VERSION_TAG = "dagster/data_version"
# Partitions whose latest materializations are looked up in one query.
_LOOKUP_BATCH = 1000


def evaluate_inbox(
    context: SensorEvaluationContext,
    inbox: Storage,
    names: DatasetNames,
    partitions_per_run: int,
    family_keys: Sequence[AssetKey] = (),
) -> SensorResult:
    """One tick: list the inbox from the cursor, register new files as partitions, request runs in ranges.

    A file already written (every family's latest materialization of its partition was written from
    this very file, as after `clip-assets discover` and `backfill`, or a daemon's restart) is
    registered and observed but not run again."""
    result = discover(inbox, DiscoveryCursor.parse(context.cursor))
    if result.incomplete:
        context.log.info(f"skipping {len(result.incomplete)} incomplete files, e.g. {result.incomplete[0]}")
    if result.waiting:
        context.log.info(f"{len(result.waiting)} chunked videos not yet complete, e.g. {result.waiting[0]}")
    known = context.instance.get_dynamic_partitions(names.partitions)
    new_keys = unknown_partition_keys(known, result.videos)
    written = _already_written(context.instance, family_keys, result.videos, set(known))
    if written:
        context.log.info(f"{len(written)} files are already written, e.g. {sorted(written)[0]}")
    to_run = [video for video in result.videos if video.partition_key not in written]
    run_requests = []
    for batch in batch_runs(to_run, [*known, *new_keys], partitions_per_run):
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


def _already_written(
    instance: DagsterInstance, family_keys: Sequence[AssetKey], videos: Sequence[DiscoveredVideo], known: set[str]
) -> set[str]:
    """The known partitions among `videos` whose every family was last written from the file as it is now.

    Two queries per family, whatever the number of files: the latest materialization's storage id per
    partition, then those records."""
    fingerprints = {video.partition_key: video.fingerprint for video in videos if video.partition_key in known}
    if not fingerprints or not family_keys:
        return set()
    current = set(fingerprints)
    for key in family_keys:
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, partitions=current
        )
        ids = list(latest.values())
        matching = set()
        for start in range(0, len(ids), _LOOKUP_BATCH):
            batch = ids[start : start + _LOOKUP_BATCH]
            records = instance.fetch_materializations(AssetRecordsFilter(key, storage_ids=batch), limit=len(batch))
            for record in records.records:
                materialization = record.asset_materialization
                value = materialization.metadata.get(INPUT_FINGERPRINT) if materialization else None
                partition = record.partition_key
                if partition is not None and value is not None and value.value == fingerprints.get(partition):
                    matching.add(partition)
        current &= matching
        if not current:
            break
    return current


def inbox_sensor(
    names: DatasetNames, partitions_per_run: int, interval_s: int, family_keys: Sequence[AssetKey]
) -> SensorDefinition:
    @sensor(
        name=names.name("processed_video_sensor"),
        job_name=curate_job_name(names),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={names.inbox},
        description="Registers complete processed videos in the inbox as partitions and requests runs for the new "
        f"or changed ones, up to {partitions_per_run} consecutive partitions per run (run key = partitions + size "
        "+ mtime/ETag, so a rewrite runs again and a repeat never does); a file already written is not run again.",
    )
    def processed_video_sensor(context: SensorEvaluationContext) -> SensorResult:
        inbox: StorageResource = getattr(context.resources, names.inbox)
        return evaluate_inbox(context, inbox.get_storage(), names, partitions_per_run, family_keys)

    return processed_video_sensor


def verify_after_curate(names: DatasetNames, jobs: DatasetJobs) -> RunStatusSensorDefinition:
    """The `intact` checks over the partitions of each successful curate run, in a run of their own."""

    @run_status_sensor(
        name=names.name("verify_after_curate"),
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[jobs.curate],
        request_job=jobs.verify,
        default_status=DefaultSensorStatus.RUNNING,
        description="After each successful curate run (the sensor's, a backfill's, the CLI's), runs the families' "
        "`intact` checks over that run's partitions, and over any partition an earlier check found damaged.",
    )
    def verify(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        tags = context.dagster_run.tags
        partition = {key: tags[key] for key in (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG) if key in tags}
        if not partition:
            return SkipReason(f"run {context.dagster_run.run_id} has no partition")
        return RunRequest(run_key=f"verify:{context.dagster_run.run_id}", tags=partition)

    return verify


def summary_automation(names: DatasetNames) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        names.name("dataset_summary_automation"),
        target=AssetSelection.groups(names.group(DATASET_GROUP)),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Re-rolls the dataset's roll-ups (their `eager` condition) after partitions were written.",
    )
