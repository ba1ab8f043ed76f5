"""Bringing the clip index and the vector table up to date with some partitions' outputs.

Reads each partition's outputs first (under that partition's lock, as its writer holds it: never a
half-written partition), then, under the dataset lock, one commit per table replaces exactly those
partitions' rows. Partitions that are no longer live (a removed video: no outputs, or no longer a
partition of the instance) lose their rows in the same commit, so a removed video leaves nothing
behind whichever partition is materialized next.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel, PartitionOutputs
from clip_assets.dataset.family_outputs import FamilyPartition, family_partitions
from clip_assets.dataset.outputs import partition_outputs
from clip_assets.dataset.tables import (
    LOCK_TIMEOUT_S,
    MIN_INDEXED_ROWS,
    EmbeddingModels,
    TableLocation,
    TableUpdate,
    VectorTable,
    indexed_partitions,
    load_embedding_models,
    models_of,
    partitions_filter,
    quoted,
    read_clip_index,
    refresh_vector_index,
    replace_partitions,
    replace_rows,
    rows_of_model,
    save_embedding_models,
    table_location,
    vector_rows,
)
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import clip_metadata
from clip_assets.storage import Lease, Storage, StorageSpec


@dataclass(frozen=True)
class ModelUpdate:
    """What an update did to one model's vector table, and to its vector index."""

    table: VectorTable
    update: TableUpdate
    vector_index: str


@dataclass(frozen=True)
class DatasetUpdate:
    """What an update did: the index's figures, each vector table's, the partitions written and those
    whose rows went."""

    index: TableUpdate
    models: tuple[ModelUpdate, ...]
    written: tuple[str, ...]
    removed: tuple[str, ...]
    # Rows the written partitions have now (the index's; the vector tables have the passed ones).
    partition_rows: int = 0

    @property
    def vectors(self) -> TableUpdate:
        """The vector tables' figures added up (the version is the last table's)."""
        updates = [model.update for model in self.models]
        return TableUpdate(
            rows=sum(u.rows for u in updates),
            inserted=sum(u.inserted for u in updates),
            updated=sum(u.updated for u in updates),
            deleted=sum(u.deleted for u in updates),
            fragments=sum(u.fragments for u in updates),
            version=updates[-1].version if updates else 0,
            compacted=any(u.compacted for u in updates),
        )

    @property
    def vector_index(self) -> str:
        """What each touched table's vector index did (the model named where there are several)."""
        if len(self.models) == 1:
            return self.models[0].vector_index
        return "; ".join(f"{model.table.model}: {model.vector_index}" for model in self.models) or "no vectors"


def update_dataset_tables(
    storage: Storage,
    partition_keys: Sequence[str],
    live_partitions: Collection[str] | None = None,
    *,
    configured: EmbeddingModel | None = None,
    min_indexed_rows: int = MIN_INDEXED_ROWS,
) -> DatasetUpdate:
    """Replace the rows of `partition_keys` in the clip index and the vector tables with what their
    outputs hold now (none, for a partition without outputs). With `live_partitions`, rows of every
    partition outside it are removed as well. `configured` is the model the dataset is configured with
    (recorded for readers that name none)."""
    return commit_partitions(
        storage,
        read_partitions(storage, partition_keys),
        live_partitions,
        configured=configured,
        min_indexed_rows=min_indexed_rows,
    )


def read_locked(
    storage: Storage, partition_key: str, views: Mapping[str, FamilyPartition] | None = None
) -> PartitionOutputs | None:
    """One partition's outputs, read under its lock: a run writing it now is waited for, so they are read
    whole. `views` are the families' views of it (the IO manager's, handed to the clip index), else made here."""
    with storage.lock(layout.lock_key(partition_key), LOCK_TIMEOUT_S):
        return partition_outputs(views if views is not None else family_partitions(storage, partition_key))


def read_partitions(
    storage: Storage,
    partition_keys: Sequence[str],
    views: Mapping[str, Mapping[str, FamilyPartition]] | None = None,
) -> dict[str, PartitionOutputs | None]:
    """The partitions' outputs, read one after another in this process; `views` by family, then partition."""
    return {
        key: read_locked(
            storage, key, {family: by_partition[key] for family, by_partition in views.items()} if views else None
        )
        for key in sorted(set(partition_keys))
    }


def read_partitions_on_ray(
    storage: StorageSpec, partition_keys: Sequence[str], cpus: float
) -> dict[str, PartitionOutputs | None]:
    """The same, each partition read by a Ray task on a node of the cluster the process is connected to
    (`parallel_backend: ray`): a run's reads, one small GET per clip document, spread over the cluster, and
    `commit_partitions` made from the tasks' outputs in this process, nothing read twice."""
    from clip_assets.engine.ray_tasks import map_partitions

    return dict(sorted(map_partitions(read_locked, storage, sorted(set(partition_keys)), cpus)))


def commit_partitions(
    storage: Storage,
    outputs: Mapping[str, PartitionOutputs | None],
    live_partitions: Collection[str] | None = None,
    *,
    configured: EmbeddingModel | None = None,
    min_indexed_rows: int = MIN_INDEXED_ROWS,
) -> DatasetUpdate:
    """`update_dataset_tables` once the outputs are read: one commit per table, under the dataset lock."""
    index_location = table_location(storage, layout.clip_index_key())
    with storage.lock(layout.dataset_lock_key(), LOCK_TIMEOUT_S) as lease:
        stored = load_embedding_models(storage)
        migrated = migrate_clip_index(storage, index_location)
        models = EmbeddingModels(tuple(sorted({*stored.tables, *migrated}, key=lambda t: t.model)), stored.configured)
        index = index_location.open()
        tables = [ci.clip_rows(found, models.dims()) for found in outputs.values() if found is not None]
        rows = pa.concat_tables(tables) if tables else ci.clip_index_schema().empty_table()
        stale = set()
        if live_partitions is not None:
            stale = indexed_partitions(index) - set(live_partitions)
        removed = tuple(sorted(stale | {key for key, found in outputs.items() if found is None}))
        replaced = sorted(set(outputs) | stale)
        index_update = replace_partitions(index_location, replaced, rows)
        lease.check()
        written = tuple(key for key, found in outputs.items() if found is not None)
        updates = _commit_vectors(storage, models, rows, written, removed, lease, min_indexed_rows)
        known = {model.table.model: model.table for model in updates} | {t.model: t for t in models.tables}
        recorded = EmbeddingModels(tuple(known[m] for m in sorted(known)), configured or stored.configured)
        if recorded != stored:
            save_embedding_models(storage, recorded)
    return DatasetUpdate(index_update, updates, written, removed, rows.num_rows)


def _commit_vectors(
    storage: Storage,
    models: EmbeddingModels,
    rows: pa.Table,
    written: Sequence[str],
    removed: Sequence[str],
    lease: Lease,
    min_indexed_rows: int,
) -> tuple[ModelUpdate, ...]:
    """Each model's vector table in step with the written partitions' rows: a model a partition has vectors
    of now gets exactly those; another model keeps the partition's vectors of clips it still has passed (a
    change of model deletes nothing), and a removed partition leaves no vector of any model."""
    dims = models.dims()
    for model in sorted(models_of(rows) - dims.keys()):
        dims[model] = _size_of(rows, model)
    ids = rows.column(ci.CLIP_ID).to_pylist()
    partitions = rows.column(ci.PARTITION_KEY).to_pylist()
    passed = rows.column(ci.PASSED).to_pylist()
    names = rows.column(ci.EMBEDDING_MODEL).to_pylist()
    versions = rows.column(ci.EMBEDDING_VERSION).to_pylist()
    kept_clips: dict[str, list[str]] = {key: [] for key in written}
    models_of_partition: dict[str, set[EmbeddingModel]] = {key: set() for key in written}
    for clip_id, key, ok, name, version in zip(ids, partitions, passed, names, versions, strict=True):
        if ok:
            kept_clips[key].append(clip_id)
        if name is not None:
            models_of_partition[key].add(EmbeddingModel(name, version))
    updates = []
    for model in sorted(dims):
        table = VectorTable(model, dims[model])
        location = table_location(storage, table.key)
        source = vector_rows(rows, model, table.dim)
        without = [key for key in written if model not in models_of_partition[key]]
        whole = (
            [key for key in written if key not in without] + [k for k in without if not kept_clips[k]] + list(removed)
        )
        clauses = [partitions_filter(whole)] if whole else []
        clauses += [
            f"({ci.PARTITION_KEY} = {quoted([key])} AND {ci.CLIP_ID} NOT IN ({quoted(kept_clips[key])}))"
            for key in without
            if kept_clips[key]
        ]
        if not clauses or (not len(source) and location.open() is None):
            continue
        delete = " OR ".join(clauses)
        update = replace_rows(location, source, delete, delete)
        lease.check()
        if update.inserted or update.updated or update.deleted:
            vector_index = refresh_vector_index(location, min_rows=min_indexed_rows)
        else:  # a model no written partition changed: its table and index stay as they are
            vector_index = f"unchanged ({update.rows} vectors)"
        updates.append(ModelUpdate(table, update, vector_index))
    return tuple(updates)


def migrate_clip_index(storage: Storage, location: TableLocation) -> tuple[VectorTable, ...]:
    """An index of the one-model format (a fixed-size `embedding`, no model columns, one vector table at
    `dataset/clip_vectors.lance`) rewritten in this one: each vector named by the algorithm of its clip's
    embedding folder, the vectors moved to their model's table. Once, under the dataset lock; returns
    the vector tables it wrote."""
    table = location.open()
    if table is None or ci.EMBEDDING_MODEL in table.schema.names:
        return ()
    old = table.to_table()
    vectors = old.column(ci.EMBEDDING).combine_chunks()
    has_vector = vectors.is_valid().to_pylist()
    models = [
        layout.embedding_algorithm_of(key) if key is not None and present else None
        for key, present in zip(old.column(ci.EMBEDDING_KEY).to_pylist(), has_vector, strict=True)
    ]
    rows = old.set_column(old.schema.get_field_index(ci.EMBEDDING), ci.EMBEDDING, vectors.cast(ci.EMBEDDING_TYPE))
    rows = rows.append_column(ci.EMBEDDING_MODEL, pa.array(models, pa.string()))
    rows = rows.append_column(ci.EMBEDDING_VERSION, pa.array(["" if m else None for m in models], pa.string()))
    rows = rows.select(ci.clip_index_schema().names).cast(ci.clip_index_schema())
    location.write(rows, "overwrite")
    made = []
    for model in sorted(models_of(rows)):
        made.append(VectorTable(model, _size_of(rows, model)))
        table_location(storage, made[-1].key).write(vector_rows(rows, model, made[-1].dim), "overwrite")
    for info in list(storage.list(f"{layout.DATASET}clip_vectors.lance/")):
        storage.delete(info.key)
    return tuple(made)


def _size_of(rows: pa.Table, model: EmbeddingModel) -> int:
    """The size of the first of `rows`' vectors of `model`."""
    return len(rows_of_model(rows, model).column(ci.EMBEDDING)[0])


def verify_index(storage: Storage, partitions: Collection[str]) -> tuple[int, list[str]]:
    """The clip index against the tree: each of `partitions` (the live ones) has exactly a row per clip
    metadata document its manifest records, and no row is of another partition. Its rows, and the problems."""
    rows = read_clip_index(storage, [ci.CLIP_ID, ci.PARTITION_KEY])
    indexed: dict[str, set[str]] = {}
    for clip_id, key in zip(
        rows.column(ci.CLIP_ID).to_pylist(), rows.column(ci.PARTITION_KEY).to_pylist(), strict=True
    ):
        indexed.setdefault(key, set()).add(clip_id)
    problems = []
    for key in sorted(partitions):
        manifest = load_manifest(storage, clip_metadata.FAMILY.name, key)
        recorded = {
            k.removeprefix(layout.CLIP_METADATA).removesuffix(".json")
            for k in (manifest.entries if manifest else {})
            if k.startswith(layout.CLIP_METADATA)
        }
        found = indexed.pop(key, set())
        if recorded != found:
            problems.append(f"{key}: {len(recorded - found)} clips missing, {len(found - recorded)} not in its outputs")
    problems += [f"{key}: {len(ids)} rows of a partition that no longer exists" for key, ids in sorted(indexed.items())]
    return rows.num_rows, problems
