"""The clip index and the vector table as Lance datasets under the output root, updated per partition.

Why Lance: a table of fragments with versioned, atomic commits, row-level deletes and
`merge_insert`, and a vector index on the same files, readable by DuckDB and pyarrow; local folders
and S3 alike. A partition's update is one commit: `merge_insert` on `clip_id` replaces the rows of
the partitions being written (rows they no longer have are deleted by the same commit, through
`when_not_matched_by_source_delete`), so a reader sees the old rows or the new ones, never a gap, and
other partitions' fragments are left as they are. Updates take the storage's lock on
`layout.dataset_lock_key()` (a `flock` locally, a lease on S3), so two runs never race a commit;
Lance's own optimistic concurrency would retry, but a lock keeps compaction and index refreshes
from conflicting too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.storage import Storage

if TYPE_CHECKING:
    import lance

# Compact once a table has this many fragments (each partition's update adds one).
MAX_FRAGMENTS = 64
TARGET_ROWS_PER_FRAGMENT = 1 << 20
# Below this many vectors a flat scan answers in milliseconds; above it an IVF index pays off.
MIN_INDEXED_ROWS = 10_000
# Retrain the index once the table has grown this much since it was trained (new vectors are
# appended to the trained partitions by `optimize_indices` until then).
RETRAIN_GROWTH = 4
# Versions older than this are removed after a compaction; readers hold a version for far less.
KEEP_VERSIONS = timedelta(hours=1)
LOCK_TIMEOUT_S = 600.0
VECTOR_COLUMNS = (ci.CLIP_ID, ci.PARTITION_KEY, ci.EMBEDDING)


def _lance() -> Any:
    """Lance, imported on first use: its import takes over a second, which every command and every load
    of the code location would pay otherwise."""
    import lance

    return lance


@dataclass(frozen=True)
class TableLocation:
    """Where a Lance table lives and how to reach it; the options hold credentials and stay out of repr."""

    uri: str
    storage_options: dict[str, str] | None = dataclasses.field(default=None, repr=False)

    def open(self) -> lance.LanceDataset | None:
        """The table's latest version, or None where it was never written."""
        try:
            table: lance.LanceDataset = _lance().dataset(self.uri, storage_options=self.storage_options)
            return table
        except (ValueError, FileNotFoundError, OSError) as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return None
            raise

    def latest(self) -> lance.LanceDataset:
        """The latest version of a table that exists."""
        table = self.open()
        if table is None:
            raise FileNotFoundError(f"{self.uri}: no Lance table")
        return table

    def write(self, rows: pa.Table, mode: str) -> lance.LanceDataset:
        """A new table of `rows` (`create`), or `rows` as the table's new content (`overwrite`)."""
        table: lance.LanceDataset = _lance().write_dataset(
            rows, self.uri, mode=mode, storage_options=self.storage_options
        )
        return table


def table_location(storage: Storage, key: str) -> TableLocation:
    """A table under the storage's root, reached with the storage's own connection (its object-store options)."""
    return TableLocation(layout.full_location(storage.root, key), storage.object_store_options() or None)


@dataclass(frozen=True)
class TableUpdate:
    """What one update did to one table."""

    rows: int
    inserted: int
    updated: int
    deleted: int
    fragments: int
    version: int
    compacted: bool = False


def read_clip_index(storage: Storage, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
    """The clip index (or some of its columns, rows matching a Lance SQL `filter`); empty, with the
    schema's columns, before the first materialization."""
    table = table_location(storage, layout.clip_index_key()).open()
    if table is None:
        empty = ci.clip_index_schema(1).empty_table()
        return empty.select(list(columns)) if columns else empty
    return table.to_table(columns=list(columns) if columns else None, filter=filter)


def embedding_dim(table: lance.LanceDataset | None) -> int | None:
    if table is None:
        return None
    field_type = table.schema.field(ci.EMBEDDING).type
    return int(field_type.list_size)


def _quoted(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in sorted(values))


def partitions_filter(partition_keys: Iterable[str]) -> str:
    """A Lance (DataFusion SQL) filter for the rows of these partitions."""
    return f"{ci.PARTITION_KEY} IN ({_quoted(partition_keys)})"


def indexed_partitions(table: lance.LanceDataset | None) -> set[str]:
    """The partitions a table has rows of: one column read."""
    if table is None:
        return set()
    column = table.to_table(columns=[ci.PARTITION_KEY]).column(ci.PARTITION_KEY)
    return {str(value) for value in pc.unique(column).to_pylist()}


def _widen(location: TableLocation, table: lance.LanceDataset, dim: int) -> lance.LanceDataset:
    """A table with no vector yet (size-1 nulls) takes the first vectors' size; a table with vectors
    never changes size: that is a different embedding and needs a rebuild."""
    with_vectors = table.count_rows(filter=f"{ci.EMBEDDING} IS NOT NULL")
    if with_vectors:
        raise ci.ClipIndexError(
            f"{location.uri}: field 'embedding' has {embedding_dim(table)} values per clip and the new outputs have "
            f"{dim}; a different embedding means a new index: delete {location.uri} and re-materialize"
        )
    rows = table.to_table()
    index = rows.schema.get_field_index(ci.EMBEDDING)
    rows = rows.set_column(
        index, pa.field(ci.EMBEDDING, ci.embedding_type(dim)), ci.embedding_array([None] * len(rows), dim)
    )
    return location.write(rows, "overwrite")


def replace_partitions(
    location: TableLocation, partition_keys: Sequence[str], rows: pa.Table, *, max_fragments: int = MAX_FRAGMENTS
) -> TableUpdate:
    """Make the table's rows of `partition_keys` exactly `rows`, in one commit; other rows stay put.

    The caller holds the dataset lock. A new table is created from `rows`; compaction follows when
    the table has more than `max_fragments` fragments.
    """
    table = location.open()
    if table is None:
        table = location.write(rows, "create")
        return TableUpdate(table.count_rows(), len(rows), 0, 0, len(table.get_fragments()), table.version)
    dim = embedding_dim(table)
    new_dim = rows.schema.field(ci.EMBEDDING).type.list_size
    if dim != new_dim:
        if rows.column(ci.EMBEDDING).null_count == len(rows):
            rows = rows.set_column(
                rows.schema.get_field_index(ci.EMBEDDING),
                pa.field(ci.EMBEDDING, ci.embedding_type(int(dim or 1))),
                ci.embedding_array([None] * len(rows), int(dim or 1)),
            )
        else:
            table = _widen(location, table, new_dim)
    if not partition_keys and not len(rows):
        return TableUpdate(table.count_rows(), 0, 0, 0, len(table.get_fragments()), table.version)
    rows = rows.select(table.schema.names).cast(table.schema)
    if partition_keys and _same_rows(table, partition_keys, rows):
        # A re-materialization of unchanged outputs commits nothing: no version, no fragment.
        return TableUpdate(table.count_rows(), 0, 0, 0, len(table.get_fragments()), table.version)
    builder = table.merge_insert(ci.CLIP_ID).when_matched_update_all().when_not_matched_insert_all()
    if partition_keys:
        builder = builder.when_not_matched_by_source_delete(partitions_filter(partition_keys))
    stats = builder.execute(rows)
    table = location.latest()
    compacted = False
    if len(table.get_fragments()) > max_fragments:
        table.optimize.compact_files(target_rows_per_fragment=TARGET_ROWS_PER_FRAGMENT, materialize_deletions=True)
        table = location.latest()
        table.cleanup_old_versions(older_than=KEEP_VERSIONS)
        compacted = True
    return TableUpdate(
        rows=table.count_rows(),
        inserted=int(stats["num_inserted_rows"]),
        updated=int(stats["num_updated_rows"]),
        deleted=int(stats["num_deleted_rows"]),
        fragments=len(table.get_fragments()),
        version=table.version,
        compacted=compacted,
    )


def _same_rows(table: lance.LanceDataset, partition_keys: Sequence[str], rows: pa.Table) -> bool:
    """Whether the table's rows of these partitions are exactly `rows` (in clip id order)."""
    current = table.to_table(filter=partitions_filter(partition_keys))
    if current.num_rows != rows.num_rows:
        return False
    return bool(current.sort_by(ci.CLIP_ID).equals(rows.sort_by(ci.CLIP_ID)))


def vector_rows(index_rows: pa.Table) -> pa.Table:
    """The vector table's rows: passed clips that have an embedding."""
    keep = pc.and_(index_rows.column(ci.PASSED), pc.is_valid(index_rows.column(ci.EMBEDDING)))
    return index_rows.filter(keep).select(list(VECTOR_COLUMNS))


def _index_parameters(rows: int, dim: int) -> dict[str, Any]:
    """IVF_PQ with 8 values per sub-vector where the size allows (a 768-d vector in 96 bytes), else
    IVF_FLAT; about sqrt(rows) partitions, as Lance recommends."""
    partitions = max(1, min(4096, int(math.sqrt(rows))))
    if dim % 8 == 0 and dim >= 32:
        return {"index_type": "IVF_PQ", "num_partitions": partitions, "num_sub_vectors": dim // 8}
    return {"index_type": "IVF_FLAT", "num_partitions": partitions}


def refresh_vector_index(location: TableLocation, *, min_rows: int = MIN_INDEXED_ROWS) -> str:
    """Build the cosine index once there are `min_rows` vectors, then fold new vectors in incrementally
    (`optimize_indices`), retraining only after the table grew `RETRAIN_GROWTH`-fold. Says what it did."""
    table = location.open()
    if table is None:
        return "no table"
    rows = table.count_rows()
    indices = [i for i in table.describe_indices() if ci.EMBEDDING in i.field_names]
    if rows < min_rows:
        return f"flat scan ({rows} < {min_rows} vectors)"
    dim = int(embedding_dim(table) or 0)
    trained_on = _indexed_rows(table, indices[0].name) if indices else 0
    if not indices or rows > RETRAIN_GROWTH * max(trained_on, 1):
        parameters = _index_parameters(rows, dim)
        table.create_index(ci.EMBEDDING, metric="cosine", replace=True, **parameters)
        return f"trained {parameters['index_type']} on {rows} vectors"
    table.optimize.optimize_indices()
    return f"optimized (trained on {trained_on}, {rows} vectors)"


def _indexed_rows(table: lance.LanceDataset, name: str) -> int:
    statistics = table.stats.index_stats(name)
    return int(statistics.get("num_indexed_rows", 0))
