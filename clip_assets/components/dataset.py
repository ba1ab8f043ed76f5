"""One curated dataset's Dagster objects, all made from the list of output families.

`dataset_definitions` is the one factory: the inbox, the families' assets, their `intact` checks, the
dataset summary, the jobs and the sensors, named after the dataset's key prefix (`DatasetNames`).
`dataset_resources` is the resource set those objects ask for. The `CuratedDataset` component calls
both from a YAML file; tests call them with their own folders.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import ConfigurableResource, Definitions, EnvVar

from clip_assets.components.assets import inbox_spec, output_families_asset
from clip_assets.components.checks import intact_checks
from clip_assets.components.dataset_exports import clip_gallery_asset, dataset_export_checks, training_shards_asset
from clip_assets.components.dataset_summary import dataset_summary_asset
from clip_assets.components.dataset_tables import (
    NearDuplicatesSettings,
    dataset_table_checks,
    dataset_tables_asset,
    near_duplicates_asset,
)
from clip_assets.components.jobs import dataset_jobs
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.components.sensors import inbox_sensor, summary_automation
from clip_assets.families import FAMILIES, OutputFamily

DEFAULT_OWNERS = ("team:clip-curation",)


def dataset_definitions(
    names: DatasetNames,
    resources: dict[str, ConfigurableResource],
    *,
    families: Sequence[OutputFamily] = FAMILIES,
    partitions_per_run: int = 25,
    sensor_interval_s: int = 30,
    owners: Sequence[str] = DEFAULT_OWNERS,
    near_duplicates: NearDuplicatesSettings | None = None,
) -> Definitions:
    """Everything Dagster needs for one dataset; `resources` as `dataset_resources` makes them;
    `near_duplicates` the defaults of the near-duplicates asset's run config."""
    objects = Definitions(
        assets=[
            inbox_spec(names, owners),
            output_families_asset(names, families, partitions_per_run, owners),
            dataset_summary_asset(names, families, owners),
            dataset_tables_asset(names, families, partitions_per_run, owners),
            near_duplicates_asset(names, owners, near_duplicates),
            training_shards_asset(names, owners),
            clip_gallery_asset(names, owners),
        ],
        asset_checks=[*intact_checks(names, families), *dataset_table_checks(names), *dataset_export_checks(names)],
        sensors=[inbox_sensor(names, partitions_per_run, sensor_interval_s), summary_automation(names)],
        resources=resources,
    )
    return Definitions.merge(objects, dataset_jobs(names))


def dataset_resources(
    names: DatasetNames,
    inbox: str | EnvVar,
    output: str | EnvVar,
    writer_settings: WriterSettingsResource,
    s3: S3ConnectionResource | None = None,
    validation_limits: ValidationLimitsResource | None = None,
) -> dict[str, ConfigurableResource]:
    """The resources one dataset's objects ask for, under its own keys."""
    return {
        names.inbox: StorageResource(url=inbox, s3=s3),
        names.output: StorageResource(url=output, s3=s3),
        names.writer_settings: writer_settings,
        names.validation_limits: validation_limits or ValidationLimitsResource(),
    }
