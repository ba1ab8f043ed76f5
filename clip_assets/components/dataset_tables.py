"""The dataset's derived tables as assets: the clip index and its vectors (per partition), the near-duplicates.

Thin: `clip_assets.dataset.update` does the work. `clip_index` and `clip_vectors` are one step
(partitioned like the output families, downstream of them) because both are made from one read of
a partition's outputs; each run replaces exactly its partitions' rows, and drops the rows of videos
that are no longer partitions. `near_duplicates` regroups the whole vector table.
"""

from collections.abc import Iterator, Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import Field

from clip_assets import layout
from clip_assets.components.names import CLIP_INDEX, CLIP_VECTORS, DATASET_GROUP, NEAR_DUPLICATES, DatasetNames
from clip_assets.components.partitions import video_partitions
from clip_assets.components.resources import StorageResource, WriterSettingsResource
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.near_duplicates import DEFAULT_MAX_COSINE_DISTANCE, DEFAULT_RATE_JUMP, rate_jumped
from clip_assets.dataset.tables import VECTOR_COLUMNS, load_embedding_models, vector_counts, verify_vectors
from clip_assets.dataset.update import (
    read_near_duplicates_summary,
    update_dataset_tables,
    update_near_duplicates,
    verify_index,
)
from clip_assets.families import OutputFamily

_MAX_LISTED = 20


def _index_schema(columns: Sequence[str] | None = None) -> TableSchema:
    """The index's columns (or some of them); a vector's size is its model's."""
    fields = [f for f in ci.clip_index_schema() if columns is None or f.name in columns]
    return TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in fields])


def configured_model(
    context: AssetExecutionContext | AssetCheckExecutionContext, names: DatasetNames
) -> EmbeddingModel:
    """The embedding model the dataset is configured with: the clip_embeddings family's algorithm, and
    the version the dataset states for it."""
    settings: WriterSettingsResource = getattr(context.resources, names.writer_settings)
    return EmbeddingModel(settings.embedding_algorithm, settings.embedding_version)


def dataset_tables_asset(
    names: DatasetNames, families: Sequence[OutputFamily], partitions_per_run: int, owners: Sequence[str]
) -> AssetsDefinition:
    """`clip_index` and `clip_vectors`, one partition (or a range) per run, downstream of every family."""
    family_keys = [names.key(family.name) for family in families]
    specs = [
        AssetSpec(
            names.key(CLIP_INDEX),
            description="One row per clip of the whole dataset (Lance, dataset/clip_index.lance): span, passed or "
            "filtered, scores, captions by model, probe facts, file URIs, MP4 bytes and sha256, the embedding.",
            kinds={"lance"},
            group_name=names.group(DATASET_GROUP),
            deps=family_keys,
            owners=list(owners),
            automation_condition=AutomationCondition.eager(),
            metadata={"dagster/column_schema": _index_schema()},
        ),
        AssetSpec(
            names.key(CLIP_VECTORS),
            description="The passed clips' embeddings, a Lance table per embedding model "
            "(dataset/clip_vectors/<model>[.<version>].lance) with a cosine IVF index once there are enough of "
            "them, for nearest-neighbour search over the whole dataset; a model's vectors stay when the dataset "
            "moves to another model.",
            kinds={"lance"},
            group_name=names.group(DATASET_GROUP),
            deps=family_keys,
            owners=list(owners),
            automation_condition=AutomationCondition.eager(),
            metadata={"dagster/column_schema": _index_schema(VECTOR_COLUMNS)},
        ),
    ]

    @multi_asset(
        name=names.name("update_dataset_tables"),
        specs=specs,
        partitions_def=video_partitions(names.partitions),
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run),
        required_resource_keys={names.output, names.writer_settings},
    )
    def update_tables(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        live = context.instance.get_dynamic_partitions(names.partitions)
        configured = configured_model(context, names)
        update = update_dataset_tables(storage, sorted(context.partition_keys), live, configured=configured)
        if update.removed:
            context.log.info(f"removed the rows of {len(update.removed)} partitions: {list(update.removed)[:5]}")
        models = load_embedding_models(storage)
        vectors = vector_counts(storage, models)
        common: dict[str, Any] = {
            "partitions_written": len(update.written),
            "clips_of_partitions_written": update.partition_rows,
            "partitions_removed": MetadataValue.json(list(update.removed)[:_MAX_LISTED]),
            "embedding_model": str(configured),
            "embedding_models": MetadataValue.json(
                [{**table.to_json(), "vectors": count} for table, count in zip(models.tables, vectors, strict=True)]
            ),
        }
        for name, table, key, rows in (
            (CLIP_INDEX, update.index, layout.clip_index_key(), update.index.rows),
            (CLIP_VECTORS, update.vectors, layout.CLIP_VECTORS, sum(vectors)),
        ):
            metadata = {
                **common,
                "dagster/row_count": MetadataValue.int(rows),
                "dagster/uri": MetadataValue.path(layout.full_location(storage.root, key)),
                "rows_inserted": table.inserted,
                "rows_updated": table.updated,
                "rows_deleted": table.deleted,
                "fragments": table.fragments,
                "lance_version": table.version,
                "compacted": table.compacted,
            }
            if name == CLIP_VECTORS:
                metadata["vector_index"] = update.vector_index
                metadata["models_updated"] = MetadataValue.json(
                    [{**m.table.to_json(), "rows": m.update.rows} for m in update.models]
                )
            yield MaterializeResult(asset_key=names.key(name), metadata=metadata)

    return update_tables


class NearDuplicatesConfig(Config):
    max_cosine_distance: float = Field(
        default=DEFAULT_MAX_COSINE_DISTANCE,
        ge=0.0,
        lt=2.0,
        description="Clips whose embeddings are this close (1 - cosine similarity) or closer are near-duplicates.",
    )


def near_duplicates_asset(names: DatasetNames, owners: Sequence[str]) -> AssetsDefinition:
    @asset(
        key=names.key(NEAR_DUPLICATES),
        deps=[names.key(CLIP_VECTORS)],
        kinds={"parquet"},
        group_name=names.group(DATASET_GROUP),
        owners=list(owners),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={names.output, names.writer_settings},
        description="Groups of passed clips whose embeddings are within a cosine distance of each other, across "
        "the whole dataset (k-means clusters, exact pairs within them, union-find); per group the longest clip is "
        "kept (ties: smallest clip id). dataset/near_duplicates.parquet, one row per member.",
    )
    def near_duplicates(context: AssetExecutionContext, config: NearDuplicatesConfig) -> MaterializeResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        update = update_near_duplicates(storage, config.max_cosine_distance, configured_model(context, names))
        grouping = update.grouping
        largest = sorted(
            set(
                zip(
                    grouping.groups.column("group_id").to_pylist(),
                    grouping.groups.column("group_size").to_pylist(),
                    strict=True,
                )
            ),
            key=lambda g: -g[1],
        )[:_MAX_LISTED]
        return MaterializeResult(
            metadata={
                "clips_compared": grouping.clips,
                "groups": grouping.group_count,
                "duplicates": grouping.duplicates,
                "duplicate_rate": MetadataValue.float(round(grouping.duplicate_rate, 6)),
                "previous_duplicate_rate": MetadataValue.float(update.previous_rate)
                if update.previous_rate is not None
                else MetadataValue.text("none (first grouping)"),
                "max_cosine_distance": MetadataValue.float(grouping.max_cosine_distance),
                "embedding_model": MetadataValue.text(str(update.model) if update.model else "no vectors yet"),
                "largest_groups": MetadataValue.json([{"group_id": g, "size": s} for g, s in largest]),
                "dagster/row_count": MetadataValue.int(grouping.groups.num_rows),
                "dagster/uri": MetadataValue.path(layout.full_location(storage.root, layout.near_duplicates_key())),
            }
        )

    return near_duplicates


def dataset_table_checks(names: DatasetNames) -> list[AssetChecksDefinition]:
    """The index agrees with the metadata documents the manifests record; the vectors with the index;
    the duplicate rate did not jump."""

    @asset_check(
        asset=names.key(CLIP_INDEX),
        name="matches_outputs",
        required_resource_keys={names.output},
        description="Every partition's clip metadata documents (per its manifest) are exactly its rows in the "
        "index, and the index holds no row of a partition that is gone.",
    )
    def matches_outputs(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        partitions = sorted(context.instance.get_dynamic_partitions(names.partitions))
        rows, problems = verify_index(output.get_storage(), partitions)
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(problems[:3]) or f"{rows} rows match {len(partitions)} partitions' outputs",
            metadata={
                "rows": rows,
                "partitions": len(partitions),
                "problems": MetadataValue.json(problems[:_MAX_LISTED]),
            },
        )

    @asset_check(
        asset=names.key(CLIP_VECTORS),
        name="matches_index",
        required_resource_keys={names.output},
        description="Each passed clip's vector is in its model's vector table with the same values, and every "
        "vector table row is of a passed clip of the index.",
    )
    def matches_index(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        check = verify_vectors(output.get_storage())
        return AssetCheckResult(
            passed=check.passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"{check.vectors} vectors match the index"
            if check.passed
            else f"{len(check.missing)} missing, {len(check.extra)} not in the index, {len(check.differing)} differ",
            metadata={
                "vectors": check.vectors,
                "missing": MetadataValue.json(check.missing[:_MAX_LISTED]),
                "not_in_index": MetadataValue.json(check.extra[:_MAX_LISTED]),
                "differing": MetadataValue.json(check.differing[:_MAX_LISTED]),
            },
        )

    @asset_check(
        asset=names.key(NEAR_DUPLICATES),
        name="duplicate_rate_steady",
        required_resource_keys={names.output},
        description=f"Warns when the duplicate rate rose more than {DEFAULT_RATE_JUMP:.0%} (absolute) since the "
        "previous grouping: a re-ingested batch or a broken embedding model looks like this.",
    )
    def duplicate_rate_steady(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        summary = read_near_duplicates_summary(output.get_storage()) or {}
        rate = float(summary.get("duplicate_rate", 0.0))
        previous = summary.get("previous_duplicate_rate")
        jumped = rate_jumped(None if previous is None else float(previous), rate)
        return AssetCheckResult(
            passed=not jumped,
            severity=AssetCheckSeverity.WARN,
            description=f"duplicate rate {rate:.2%}, previously "
            + ("none" if previous is None else f"{float(previous):.2%}"),
            metadata={
                "duplicate_rate": MetadataValue.float(rate),
                "previous_duplicate_rate": MetadataValue.float(float(previous))
                if previous is not None
                else MetadataValue.text("none"),
                "tolerance": MetadataValue.float(DEFAULT_RATE_JUMP),
            },
        )

    return [matches_outputs, matches_index, duplicate_rate_steady]
