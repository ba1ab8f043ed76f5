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
from clip_assets.dataset.clip_index import PartitionOutputs
from clip_assets.dataset.outputs import read_partition_outputs
from clip_assets.dataset.tables import (
    LOCK_TIMEOUT_S,
    MIN_INDEXED_ROWS,
    TableUpdate,
    embedding_dim,
    indexed_partitions,
    refresh_vector_index,
    replace_partitions,
    table_location,
    vector_rows,
)
from clip_assets.storage import Storage, StorageSpec


@dataclass(frozen=True)
class DatasetUpdate:
    """What an update did: both tables' figures, the partitions written and those whose rows went."""

    index: TableUpdate
    vectors: TableUpdate
    written: tuple[str, ...]
    removed: tuple[str, ...]
    vector_index: str
    dim: int
    # Rows the written partitions have now (the index's; the vector table has the passed ones).
    partition_rows: int = 0


def update_dataset_tables(
    storage: Storage,
    partition_keys: Sequence[str],
    live_partitions: Collection[str] | None = None,
    *,
    min_indexed_rows: int = MIN_INDEXED_ROWS,
) -> DatasetUpdate:
    """Replace the rows of `partition_keys` in the clip index and the vector table with what their
    outputs hold now (none, for a partition without outputs). With `live_partitions`, rows of every
    partition outside it are removed as well."""
    return commit_partitions(
        storage, read_partitions(storage, partition_keys), live_partitions, min_indexed_rows=min_indexed_rows
    )


def read_locked(storage: Storage, partition_key: str) -> PartitionOutputs | None:
    """One partition's outputs, read under its lock: a run writing it now is waited for, so they are read whole."""
    with storage.lock(layout.lock_key(partition_key), LOCK_TIMEOUT_S):
        return read_partition_outputs(storage, partition_key)


def read_partitions(storage: Storage, partition_keys: Sequence[str]) -> dict[str, PartitionOutputs | None]:
    """The partitions' outputs, read one after another in this process."""
    return {key: read_locked(storage, key) for key in sorted(set(partition_keys))}


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
    min_indexed_rows: int = MIN_INDEXED_ROWS,
) -> DatasetUpdate:
    """`update_dataset_tables` once the outputs are read: one commit per table, under the dataset lock."""
    index_location = table_location(storage, layout.clip_index_key())
    vectors_location = table_location(storage, layout.clip_vectors_key())
    with storage.lock(layout.dataset_lock_key(), LOCK_TIMEOUT_S) as lease:
        index = index_location.open()
        dim = embedding_dim(index)
        if dim is None or (index is not None and not index.count_rows(filter=f"{ci.EMBEDDING} IS NOT NULL")):
            sizes = [v.size for found in outputs.values() if found for v, _ in found.vectors.values()]
            dim = sizes[0] if sizes else (dim or 1)
        tables = [ci.clip_rows(found, dim) for found in outputs.values() if found is not None]
        rows = pa.concat_tables(tables) if tables else ci.clip_index_schema(dim).empty_table()
        stale = set()
        if live_partitions is not None:
            stale = indexed_partitions(index) - set(live_partitions)
        removed = tuple(sorted(stale | {key for key, found in outputs.items() if found is None}))
        replaced = sorted(set(outputs) | stale)
        index_update = replace_partitions(index_location, replaced, rows)
        lease.check()
        vectors_update = replace_partitions(vectors_location, replaced, vector_rows(rows))
        lease.check()
        vector_index = refresh_vector_index(vectors_location, min_rows=min_indexed_rows)
    written = tuple(key for key, found in outputs.items() if found is not None)
    return DatasetUpdate(index_update, vectors_update, written, removed, vector_index, dim, rows.num_rows)
