"""The derived products' assets and checks, all made from the product list, as the families' are from theirs.

One factory: each `DerivedProduct` becomes an asset (a multi-asset when it has several outputs), its run
config (its settings, defaulting to the dataset's defs.yaml values, and its run options), and one asset
check per `ProductCheck`. A product that reads the families gets them as inputs through the families'
IO manager (`FamilyPartition` views); its other dependencies are the outputs of products before it.
"""

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    BetaWarning,
    Config,
    MaterializeResult,
    TableColumn,
    TableSchema,
    asset_check,
    multi_asset,
)
from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo

from clip_assets.components.metadata import dagster_metadata
from clip_assets.components.names import DATASET_GROUP, DatasetNames
from clip_assets.components.partitions import video_partitions
from clip_assets.components.resources import StorageResource, WriterSettingsResource
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.family_outputs import FamilyPartition
from clip_assets.dataset.products import OUTPUT_FAMILIES, DerivedProduct, ProductRun
from clip_assets.families import OutputFamily


class ProductSettingsError(ValueError):
    """A dataset's settings for a product that its settings model refuses; names the product and the field."""


def product_settings(product: DerivedProduct, values: Mapping[str, Any]) -> BaseModel | None:
    """The product's settings from a dataset's values (its defs.yaml attribute), validated."""
    if product.settings is None:
        if values:
            raise ProductSettingsError(f"{product.name}: has no settings, got {sorted(values)}")
        return None
    try:
        return product.settings(**values)
    except ValueError as exc:
        first = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = f"{first[1]}: {first[2].split(' [type=')[0]}" if len(first) >= 3 else str(exc)
        raise ProductSettingsError(f"{product.name}: {detail}") from None


def _config_type(product: DerivedProduct, defaults: BaseModel | None) -> type[Config]:
    """The run config: every setting, defaulting to the dataset's, and the run options."""
    fields: dict[str, Any] = {}
    for model, values in ((product.settings, defaults), (product.run_options, None)):
        if model is None:
            continue
        for name, info in model.model_fields.items():
            default = getattr(values, name) if values is not None else info.default
            fields[name] = (info.annotation, FieldInfo.merge_field_infos(info, default=default))
    title = "".join(part.title() for part in product.name.split("_")) + "Config"
    config: type[Config] = create_model(title, __base__=Config, **fields)
    return config


def configured_model(
    context: AssetExecutionContext | AssetCheckExecutionContext, names: DatasetNames
) -> EmbeddingModel:
    """The embedding model the dataset is configured with: the clip_embeddings family's algorithm, and the
    version the dataset states for it."""
    settings: WriterSettingsResource = getattr(context.resources, names.writer_settings)
    return EmbeddingModel(settings.embedding_algorithm, settings.embedding_version)


def _product_run(
    context: AssetExecutionContext | AssetCheckExecutionContext,
    names: DatasetNames,
    *,
    partition_keys: Sequence[str] = (),
    families: Mapping[str, Mapping[str, FamilyPartition]] | None = None,
    settings: BaseModel | None = None,
    options: Mapping[str, Any] | None = None,
    products: Sequence[DerivedProduct] = (),
) -> ProductRun:
    output: StorageResource = getattr(context.resources, names.output)
    writer: WriterSettingsResource = getattr(context.resources, names.writer_settings)
    instance = context.instance
    return ProductRun(
        storage=output.get_storage(),
        spec=output.spec(),
        model=configured_model(context, names),
        partition_keys=tuple(sorted(partition_keys)),
        live_partitions=lambda: instance.get_dynamic_partitions(names.partitions),
        families=families or {},
        settings=settings,
        log=context.log,
        options=options or {},
        products=products,
        parallel_backend=writer.parallel_backend,
        ray_cpus_per_partition=writer.ray_cpus_per_partition,
    )


def _by_partition(loaded: FamilyPartition | Mapping[str, FamilyPartition]) -> dict[str, FamilyPartition]:
    """What the families' IO manager handed over (one view, or views by partition), by partition."""
    return {loaded.partition_key: loaded} if isinstance(loaded, FamilyPartition) else dict(loaded)


def product_asset(
    names: DatasetNames,
    product: DerivedProduct,
    products: Sequence[DerivedProduct],
    families: Sequence[OutputFamily],
    partitions_per_run: int,
    owners: Sequence[str],
    defaults: BaseModel | None,
) -> AssetsDefinition:
    """The product's asset (its outputs, one step), eager: it follows what it depends on."""
    reads_families = OUTPUT_FAMILIES in product.depends_on
    deps = [names.key(name) for name in product.depends_on if name != OUTPUT_FAMILIES]
    if reads_families:
        deps += [names.key(family.name) for family in families]
    specs = [
        AssetSpec(
            names.key(output.name),
            description=output.description,
            kinds=set(output.kinds),
            group_name=names.group(DATASET_GROUP),
            deps=deps,
            owners=list(owners),
            automation_condition=AutomationCondition.eager(),
            metadata={"dagster/column_schema": TableSchema([TableColumn(n, t) for n, t in output.columns])}
            if output.columns
            else {},
        )
        for output in product.outputs
    ]
    ins = {family.name: AssetIn(names.key(family.name)) for family in families} if reads_families else {}
    partitioned: dict[str, Any] = {}
    if product.per_partition:
        partitioned["partitions_def"] = video_partitions(names.partitions)
        # Beta in Dagster 1.13, and it would warn on every load; what this project relies on is tested.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=BetaWarning)
            partitioned["backfill_policy"] = BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run)
    config_type = _config_type(product, defaults)
    settings_fields = set(product.settings.model_fields) if product.settings is not None else set()

    @multi_asset(
        name=names.name(product.name),
        specs=specs,
        ins=ins,
        required_resource_keys={names.output, names.writer_settings},
        **partitioned,
    )
    def build(context: AssetExecutionContext, config: config_type, **loaded: Any) -> Iterator[MaterializeResult]:  # type: ignore[valid-type]
        given: dict[str, Any] = config.model_dump()  # type: ignore[attr-defined]
        settings = (
            product.settings(**{k: v for k, v in given.items() if k in settings_fields}) if product.settings else None
        )
        run = _product_run(
            context,
            names,
            partition_keys=context.partition_keys if product.per_partition else (),
            families={family: _by_partition(views) for family, views in loaded.items()},
            settings=settings,
            options={k: v for k, v in given.items() if k not in settings_fields},
            products=products,
        )
        built = product.build(run)
        for output in product.outputs:
            yield MaterializeResult(
                asset_key=names.key(output.name), metadata=dagster_metadata(built.metadata[output.name])
            )

    return build


def product_checks(names: DatasetNames, product: DerivedProduct) -> list[AssetChecksDefinition]:
    """One asset check per `ProductCheck`: ERROR when it finds a problem, WARN for what was left out."""

    def make(check_index: int) -> AssetChecksDefinition:
        check = product.checks[check_index]

        @asset_check(
            asset=names.key(check.output),
            name=check.name,
            required_resource_keys={names.output, names.writer_settings},
            description=check.description,
        )
        def run_check(context: AssetCheckExecutionContext) -> AssetCheckResult:
            found = check.run(_product_run(context, names))
            return AssetCheckResult(
                passed=found.passed,
                severity=AssetCheckSeverity.WARN if found.severity == "warn" else AssetCheckSeverity.ERROR,
                description=found.description,
                metadata=dagster_metadata(found.metadata),
            )

        return run_check

    return [make(index) for index in range(len(product.checks))]
