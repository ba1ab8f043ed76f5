"""The default dataset's Dagster objects, and one partition materialized with them, for tests that bind
their own folders, endpoint and settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dagster import (
    AssetsDefinition,
    ConfigurableResource,
    DagsterInstance,
    EnvVar,
    ExecuteInProcessResult,
    build_sensor_context,
    materialize,
)

from clip_assets import layout
from clip_assets.defs.dataset import dataset_definitions, dataset_resources
from clip_assets.defs.names import DatasetNames
from clip_assets.defs.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.defs.sensors import evaluate_inbox

NAMES = DatasetNames()
PARTITIONS_NAME = NAMES.partitions
PARTITIONS_PER_RUN = 25
DEFINITIONS = dataset_definitions(NAMES, {}, partitions_per_run=PARTITIONS_PER_RUN)
processed_videos, family_outputs, dataset_summary = DEFINITIONS.assets  # type: ignore[misc]
FAMILY_ASSETS: list[AssetsDefinition] = [family_outputs]  # type: ignore[list-item]
output_checks = list(DEFINITIONS.asset_checks)
processed_video_sensor, dataset_summary_automation = DEFINITIONS.sensors
verify_outputs = next(job for job in DEFINITIONS.jobs or () if job.name == NAMES.name("verify_outputs"))


def build_resources(
    inbox: str | EnvVar,
    output: str | EnvVar,
    writer_settings: WriterSettingsResource,
    s3: S3ConnectionResource | None = None,
    validation_limits: ValidationLimitsResource | None = None,
) -> dict[str, ConfigurableResource]:
    """The default dataset's resources, on the test's own folders or endpoint."""
    return dataset_resources(NAMES, inbox, output, writer_settings, s3, validation_limits)


def materialize_partition(
    instance: DagsterInstance,
    partition_key: str,
    inbox: str,
    output: str,
    *,
    s3: S3ConnectionResource | None = None,
    assets: list | None = None,
    **settings: object,
) -> ExecuteInProcessResult:
    """Materialize output families of one partition (all of them, as `curate_videos` does, by default)."""
    known = instance.get_dynamic_partitions(PARTITIONS_NAME)
    if partition_key not in known:
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *(assets or FAMILY_ASSETS)],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, writer_settings, s3),
        raise_on_error=False,
    )


def sensor_tick(
    instance: DagsterInstance, inbox: str, s3: S3ConnectionResource | None = None, cursor: str | None = None
):
    """One tick of the default dataset's inbox sensor against `inbox` (what its `@sensor` function runs)."""
    storage = StorageResource(url=inbox, s3=s3).get_storage()
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        return evaluate_inbox(context, storage, NAMES, PARTITIONS_PER_RUN)


def materialization_metadata(result: ExecuteInProcessResult, asset_name: str) -> dict[str, object]:
    """The metadata values of a run's (first) materialization of `asset_name`."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset_name:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset_name}")


def stored_output_digest(output: Path, family: str, partition_key: str) -> str:
    """What a materialization's `manifest_sha256` must be, computed here from the stored files themselves:
    the sha256 of each file the partition's manifest lists, keyed by path in path order. Comparing with
    `PartitionManifest.digest` instead would check that code against itself."""
    listed = json.loads((output / layout.manifest_key(family, partition_key)).read_bytes())["artifacts"]
    hasher = hashlib.sha256()
    for key in sorted(listed):
        hasher.update(f"{key}\0{hashlib.sha256((output / key).read_bytes()).hexdigest()}\n".encode())
    return hasher.hexdigest()
