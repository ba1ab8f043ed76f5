"""One curated dataset's Dagster objects, all made from the list of output families and the list of products.

`dataset_definitions` is the one factory: the inbox, the families' assets and their `intact` checks, the
derived products' assets and checks, the jobs and the sensors, named after the dataset's key prefix
(`DatasetNames`). `dataset_resources` is the resource set those objects ask for, the families' IO
manager among them. The `CuratedDataset` component calls both from a YAML file; tests call them with
their own folders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import ConfigurableIOManager, ConfigurableResource, Definitions, EnvVar

from clip_assets.components.assets import inbox_spec, output_families_asset
from clip_assets.components.checks import intact_checks
from clip_assets.components.io_manager import FamilyOutputsIOManager
from clip_assets.components.jobs import dataset_jobs
from clip_assets.components.names import DatasetNames
from clip_assets.components.products import product_asset, product_checks, product_settings
from clip_assets.components.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.components.sensors import inbox_sensor, summary_automation, verify_after_curate
from clip_assets.dataset.products import PRODUCTS, DerivedProduct
from clip_assets.families import FAMILIES, OutputFamily

DEFAULT_OWNERS = ("team:clip-curation",)


def dataset_definitions(
    names: DatasetNames,
    resources: Mapping[str, ConfigurableResource | ConfigurableIOManager],
    *,
    families: Sequence[OutputFamily] = FAMILIES,
    partitions_per_run: int = 25,
    sensor_interval_s: int = 30,
    owners: Sequence[str] = DEFAULT_OWNERS,
    verify_after_write: bool = True,
    products: Sequence[DerivedProduct] = PRODUCTS,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Definitions:
    """Everything Dagster needs for one dataset; `resources` as `dataset_resources` makes them; `settings`
    a product's settings for this dataset, by product name (the defaults of its run config)."""
    jobs = dataset_jobs(names, products)
    family_keys = [names.key(family.name) for family in families]
    sensors = [inbox_sensor(names, partitions_per_run, sensor_interval_s, family_keys), summary_automation(names)]
    if verify_after_write:
        sensors.append(verify_after_curate(names, jobs))
    chosen = settings or {}
    return Definitions(
        assets=[
            inbox_spec(names, owners),
            output_families_asset(names, families, partitions_per_run, owners),
            *(
                product_asset(
                    names,
                    product,
                    products,
                    families,
                    partitions_per_run,
                    owners,
                    product_settings(product, chosen.get(product.name, {})),
                )
                for product in products
            ),
        ],
        asset_checks=[*intact_checks(names, families), *(c for p in products for c in product_checks(names, p))],
        jobs=jobs.all,
        sensors=sensors,
        resources=resources,
    )


def dataset_resources(
    names: DatasetNames,
    inbox: str | EnvVar,
    output: str | EnvVar,
    writer_settings: WriterSettingsResource,
    s3: S3ConnectionResource | None = None,
    validation_limits: ValidationLimitsResource | None = None,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, ConfigurableResource | ConfigurableIOManager]:
    """The resources one dataset's objects ask for, under its own keys. `storage_options` reach both
    roots' stores (each backend takes its own names); `s3` is dagster-aws's connection, for S3."""
    options = dict(storage_options or {})
    output_storage = StorageResource(url=output, storage_options=options, s3=s3)
    return {
        names.inbox: StorageResource(url=inbox, storage_options=options, s3=s3),
        names.output: output_storage,
        names.families_io: FamilyOutputsIOManager(output=output_storage),
        names.writer_settings: writer_settings,
        names.validation_limits: validation_limits or ValidationLimitsResource(),
    }
