"""The dataset's derived tables as assets: the clip index and its vectors (per partition), the near-duplicates.

Thin: `clip_assets.dataset.update` does the work. `clip_index` and `clip_vectors` are one step
(partitioned like the output families, downstream of them) because both are made from one read of
a partition's outputs; each run replaces exactly its partitions' rows, and drops the rows of videos
that are no longer partitions. `near_duplicates` re-decides the clusters whose clips changed
(`clip_assets.dataset.near_duplicates_update`).
"""

from collections.abc import Iterator, Sequence
from dataclasses import asdict
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
    Model,
    Resolvable,
    TableColumn,
    TableSchema,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from clip_assets import layout
from clip_assets.components.names import CLIP_INDEX, CLIP_VECTORS, DATASET_GROUP, NEAR_DUPLICATES, DatasetNames
from clip_assets.components.partitions import video_partitions
from clip_assets.components.resources import StorageResource, WriterSettingsResource
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.near_duplicates import (
    CLUSTER_SIZE,
    DEFAULT_EPS,
    DEFAULT_MEMORY_MB,
    DEFAULT_PAIRWISE_BATCH_SIZE,
    DEFAULT_RANDOM_STATE,
    DEFAULT_RATE_JUMP,
    DedupSettings,
    Rule,
    WhichToKeep,
    rate_jumped,
)
from clip_assets.dataset.near_duplicates_update import read_near_duplicates_summary, update_near_duplicates
from clip_assets.dataset.tables import VECTOR_COLUMNS, load_embedding_models, vector_counts, verify_vectors
from clip_assets.dataset.update import commit_partitions, read_partitions, read_partitions_on_ray, verify_index
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
        settings: WriterSettingsResource = getattr(context.resources, names.writer_settings)
        storage = output.get_storage()
        live = context.instance.get_dynamic_partitions(names.partitions)
        keys = sorted(context.partition_keys)
        if settings.parallel_backend == "ray":
            outputs = read_partitions_on_ray(output.spec(), keys, settings.ray_cpus_per_partition)
        else:
            outputs = read_partitions(storage, keys)
        configured = configured_model(context, names)
        update = commit_partitions(storage, outputs, live, configured=configured)
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


class NearDuplicatesSettings(Resolvable, Model):
    """A dataset's near-duplicate settings, NeMo's names: the `near_duplicates:` attribute of its defs.yaml,
    and the defaults of the asset's run config (which can set each one for a run)."""

    rule: Rule = Field(
        default="nemo",
        description="'nemo': NeMo Curator's ranked comparison (a clip goes when an earlier-ranked clip of its "
        "cluster is within eps); 'transitive': union-find groups of pairs within eps, the longest clip kept.",
    )
    eps: float = Field(
        default=DEFAULT_EPS, ge=0.0, lt=1.0, description="Near-duplicate at cosine similarity >= 1 - eps (NeMo's)."
    )
    which_to_keep: WhichToKeep = Field(
        default="hard",
        description="NeMo's ranking within a cluster: 'hard' keeps the clips farthest from the centroid, 'easy' "
        "the closest, 'random' a seeded shuffle.",
    )
    n_clusters: int | None = Field(
        default=None, ge=1, description=f"k-means clusters; unset: one per {CLUSTER_SIZE} clips, fixed at each fit."
    )
    random_state: int = Field(default=DEFAULT_RANDOM_STATE, description="Seeds k-means and 'random'.")
    pairwise_batch_size: int = Field(
        default=DEFAULT_PAIRWISE_BATCH_SIZE, ge=1, description="Clips compared per block (NeMo's)."
    )
    memory_mb: int = Field(
        default=DEFAULT_MEMORY_MB,
        ge=16,
        description="MiB of vectors, similarity blocks and k-means sample held at once.",
    )

    def settings(self) -> DedupSettings:
        return DedupSettings(**{name: getattr(self, name) for name in NearDuplicatesSettings.model_fields})


def near_duplicates_config(defaults: NearDuplicatesSettings) -> type[Config]:
    """The asset's run config: every setting, defaulting to the dataset's, and two actions."""
    fields: dict[str, Any] = {
        name: (info.annotation, FieldInfo.merge_field_infos(info, default=getattr(defaults, name)))
        for name, info in NearDuplicatesSettings.model_fields.items()
    }
    fields["refit"] = (bool, Field(default=False, description="Fit k-means anew (every cluster is re-decided)."))
    fields["accept_rate"] = (
        bool,
        Field(default=False, description="Take this build's duplicate rate as the one duplicate_rate_steady accepts."),
    )
    config: type[Config] = create_model("NearDuplicatesConfig", __base__=Config, **fields)
    return config


def near_duplicates_asset(
    names: DatasetNames, owners: Sequence[str], defaults: NearDuplicatesSettings | None = None
) -> AssetsDefinition:
    config_type = near_duplicates_config(defaults or NearDuplicatesSettings())

    @asset(
        key=names.key(NEAR_DUPLICATES),
        deps=[names.key(CLIP_VECTORS)],
        kinds={"parquet"},
        group_name=names.group(DATASET_GROUP),
        owners=list(owners),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={names.output, names.writer_settings},
        description="Near-duplicate passed clips across the whole dataset, by NeMo Curator's semantic dedup rule "
        "(k-means clusters; within each, clips ranked by which_to_keep and one removed when an earlier-ranked clip "
        "is at cosine similarity >= 1 - eps), over the dataset's configured embedding model's vectors. "
        "dataset/near_duplicates.parquet: one row per clip with NeMo's centroid, cosine_dist_to_cent, max_id, "
        "cosine_sim_score and kept. rule 'transitive' writes union-find groups (one row per member) with the "
        "longest clip kept.",
    )
    def near_duplicates(context: AssetExecutionContext, config: config_type) -> MaterializeResult:  # type: ignore[valid-type]
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        given: dict[str, Any] = config.model_dump()  # type: ignore[attr-defined]
        chosen = NearDuplicatesSettings(**{name: given[name] for name in NearDuplicatesSettings.model_fields})
        update = update_near_duplicates(
            storage,
            chosen.settings(),
            model=configured_model(context, names),
            refit=given["refit"],
            accept_rate=given["accept_rate"],
        )
        grouping, build = update.grouping, update.build
        return MaterializeResult(
            metadata={
                "clips_compared": grouping.clips,
                "groups": grouping.group_count,
                "duplicates": grouping.duplicates,
                "duplicate_rate": MetadataValue.float(round(grouping.duplicate_rate, 6)),
                "previous_duplicate_rate": MetadataValue.float(update.previous_rate)
                if update.previous_rate is not None
                else MetadataValue.text("none (first build)"),
                "baseline_duplicate_rate": MetadataValue.float(update.baseline_rate)
                if update.baseline_rate is not None
                else MetadataValue.text("none (first build)"),
                "settings": MetadataValue.json(asdict(grouping.settings)),
                "embedding_model": MetadataValue.text(str(build.model) if build.model else "no vectors yet"),
                "clusters": grouping.clusters,
                "kmeans": MetadataValue.text(("fitted: " if build.refit.needed else "") + build.refit.reason),
                "clusters_decided": build.clusters_decided,
                "clips_decided": build.clips_decided,
                "dagster/row_count": MetadataValue.int(grouping.table.num_rows),
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
        description=f"Warns when the duplicate rate rose more than {DEFAULT_RATE_JUMP:.0%} (absolute) above the last "
        "rate it accepted: a re-ingested batch or a broken embedding model looks like this. It keeps warning until "
        "a build's rate is back within that, or a run with accept_rate takes the new rate.",
    )
    def duplicate_rate_steady(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        summary = read_near_duplicates_summary(output.get_storage()) or {}
        rate = float(summary.get("duplicate_rate", 0.0))
        baseline = summary.get("baseline_duplicate_rate", summary.get("previous_duplicate_rate"))
        jumped = rate_jumped(None if baseline is None else float(baseline), rate)
        return AssetCheckResult(
            passed=not jumped,
            severity=AssetCheckSeverity.WARN,
            description=f"duplicate rate {rate:.2%}, last accepted "
            + ("none" if baseline is None else f"{float(baseline):.2%}"),
            metadata={
                "duplicate_rate": MetadataValue.float(rate),
                "baseline_duplicate_rate": MetadataValue.float(float(baseline))
                if baseline is not None
                else MetadataValue.text("none"),
                "tolerance": MetadataValue.float(DEFAULT_RATE_JUMP),
            },
        )

    return [matches_outputs, matches_index, duplicate_rate_steady]
