"""Bringing the clip index and the vector table up to date with some partitions' outputs.

Reads each partition's outputs first (under that partition's lock, as its writer holds it: never a
half-written partition), then, under the dataset lock, one commit per table replaces exactly those
partitions' rows. Partitions that are no longer live (a removed video: no outputs, or no longer a
partition of the instance) lose their rows in the same commit, so a removed video leaves nothing
behind whichever partition is materialized next.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

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
    holds_rows,
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
    unchanged,
    vector_rows,
)
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import FAMILIES, clip_metadata
from clip_assets.storage import Storage, StorageError, StorageSpec


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
    """One partition's outputs, read whole: a run writing it now is waited for. `views` are the families'
    views of it (the IO manager's, handed to the clip index), else made here.

    First without its lock, since on an object store a lock is two writes: when no run holds the
    partition before the read and no manifest changed by its end, what was read is one run's outputs
    (writers publish manifests last, under that lock). Otherwise, or when a file went mid-read, read again
    under the lock. (A local lock file stays after use; there the read takes the lock, which costs no request.)
    """
    watched = [layout.manifest_key(family.name, partition_key) for family in FAMILIES]
    watched.append(layout.lock_key(partition_key))

    def read() -> PartitionOutputs | None:
        # New views each time: a view keeps the manifest it read first.
        fresh = {family: replace(view) for family, view in views.items()} if views else None
        return partition_outputs(fresh if fresh is not None else family_partitions(storage, partition_key))

    before = _fingerprints(storage, watched)
    if before[-1] is None:
        try:
            found = read()
        except (StorageError, ci.ClipIndexError):
            pass  # read again under the lock: it waits for a writer, and then fails if the problem is real
        else:
            if _fingerprints(storage, watched) == before:
                return found
    with storage.lock(layout.lock_key(partition_key), LOCK_TIMEOUT_S):
        return read()


def _fingerprints(storage: Storage, keys: Sequence[str]) -> list[str | None]:
    return [None if info is None else info.fingerprint for info in storage.stat_many(keys)]


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


@dataclass(frozen=True)
class _VectorCommit:
    """What one model's vector table gets: `source` in, the rows matching `delete` that it lacks out."""

    table: VectorTable
    location: TableLocation
    source: pa.Table
    delete: str


def commit_partitions(
    storage: Storage,
    outputs: Mapping[str, PartitionOutputs | None],
    live_partitions: Collection[str] | None = None,
    *,
    configured: EmbeddingModel | None = None,
    min_indexed_rows: int = MIN_INDEXED_ROWS,
) -> DatasetUpdate:
    """`update_dataset_tables` once the outputs are read: one commit per table, under the dataset lock; none,
    and no lock, when the tables hold exactly these outputs already (a re-run of unchanged partitions)."""
    index_location = table_location(storage, layout.clip_index_key())
    standing = _standing(storage, index_location, outputs, live_partitions, configured)
    if standing is not None:
        return standing
    with storage.lock(layout.dataset_lock_key(), LOCK_TIMEOUT_S) as lease:
        stored = load_embedding_models(storage)
        migrated = migrate_clip_index(storage, index_location)
        models = EmbeddingModels(tuple(sorted({*stored.tables, *migrated}, key=lambda t: t.model)), stored.configured)
        index = index_location.open()
        rows = _index_rows(outputs, models)
        stale = set()
        if live_partitions is not None:
            stale = indexed_partitions(index) - set(live_partitions)
        removed = tuple(sorted(stale | {key for key, found in outputs.items() if found is None}))
        replaced = sorted(set(outputs) | stale)
        index_update = replace_partitions(index_location, replaced, rows)
        lease.check()
        written = tuple(key for key, found in outputs.items() if found is not None)
        updates = []
        for commit in _vector_commits(storage, models, rows, written, removed):
            if not len(commit.source) and commit.location.open() is None:
                continue
            update = replace_rows(commit.location, commit.source, commit.delete, commit.delete)
            lease.check()
            if update.inserted or update.updated or update.deleted:
                vector_index = refresh_vector_index(commit.location, min_rows=min_indexed_rows)
            else:  # a model no written partition changed: its table and index stay as they are
                vector_index = f"unchanged ({update.rows} vectors)"
            updates.append(ModelUpdate(commit.table, update, vector_index))
        known = {model.table.model: model.table for model in updates} | {t.model: t for t in models.tables}
        recorded = EmbeddingModels(tuple(known[m] for m in sorted(known)), configured or stored.configured)
        if recorded != stored:
            save_embedding_models(storage, recorded)
    return DatasetUpdate(index_update, tuple(updates), written, removed, rows.num_rows)


def _index_rows(outputs: Mapping[str, PartitionOutputs | None], models: EmbeddingModels) -> pa.Table:
    tables = [ci.clip_rows(found, models.dims()) for found in outputs.values() if found is not None]
    return pa.concat_tables(tables) if tables else ci.clip_index_schema().empty_table()


def _standing(
    storage: Storage,
    index_location: TableLocation,
    outputs: Mapping[str, PartitionOutputs | None],
    live_partitions: Collection[str] | None,
    configured: EmbeddingModel | None,
) -> DatasetUpdate | None:
    """The update, when the index and every vector table already hold exactly `outputs` and nothing else would
    change (no stale partition, no new model, no migration); None when a commit is needed. Reads only."""
    stored = load_embedding_models(storage)
    index = index_location.open()
    if index is None or ci.EMBEDDING_MODEL not in index.schema.names or not outputs:
        return None
    if configured is not None and configured != stored.configured:
        return None
    rows = _index_rows(outputs, stored)
    if models_of(rows) - stored.dims().keys():
        return None
    if live_partitions is not None and indexed_partitions(index) - set(live_partitions):
        return None
    if not holds_rows(index, partitions_filter(sorted(outputs)), rows):
        return None
    written = tuple(key for key, found in outputs.items() if found is not None)
    removed = tuple(sorted(key for key, found in outputs.items() if found is None))
    updates = []
    for commit in _vector_commits(storage, stored, rows, written, removed):
        table = commit.location.open()
        if table is None:
            if len(commit.source):
                return None
            continue
        if not holds_rows(table, commit.delete, commit.source):
            return None
        updates.append(ModelUpdate(commit.table, unchanged(table), f"unchanged ({table.count_rows()} vectors)"))
    return DatasetUpdate(unchanged(index), tuple(updates), written, removed, rows.num_rows)


def _vector_commits(
    storage: Storage,
    models: EmbeddingModels,
    rows: pa.Table,
    written: Sequence[str],
    removed: Sequence[str],
) -> list[_VectorCommit]:
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
    commits = []
    for model in sorted(dims):
        table = VectorTable(model, dims[model])
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
        if clauses:
            location = table_location(storage, table.key)
            commits.append(_VectorCommit(table, location, vector_rows(rows, model, table.dim), " OR ".join(clauses)))
    return commits


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
