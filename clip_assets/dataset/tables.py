"""The clip index and the vector tables as Lance datasets under the output root, updated per partition.

One vector table per embedding model (`layout.clip_vectors_key`): models have sizes of their own and a
vector index is trained on one model's vectors, and `embedding_models.json` (`EmbeddingModels`) lists
the tables, their sizes and the model the dataset is configured with.

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

import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.storage import Storage, put_if_changed, read_if_exists

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
VECTOR_COLUMNS = (ci.CLIP_ID, ci.PARTITION_KEY, ci.EMBEDDING_MODEL, ci.EMBEDDING_VERSION, ci.EMBEDDING)
EMBEDDING_MODELS_FORMAT = 1


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
        empty = ci.clip_index_schema().empty_table()
        return empty.select(list(columns)) if columns else empty
    return table.to_table(columns=list(columns) if columns else None, filter=filter)


def vector_schema(dim: int) -> pa.Schema:
    """A model's vector table: the passed clips that have a vector of it, each row naming the model."""
    index = ci.clip_index_schema()
    return pa.schema(
        [index.field(name) for name in VECTOR_COLUMNS[:-1]] + [pa.field(ci.EMBEDDING, ci.vector_type(dim))]
    )


@dataclass(frozen=True)
class VectorTable:
    """One model's vector table: where it is and the size of its vectors."""

    model: EmbeddingModel
    dim: int

    @property
    def key(self) -> str:
        return layout.clip_vectors_key(self.model.name, self.model.version)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model.name, "version": self.model.version, "dim": self.dim, "table": self.key}


class EmbeddingModelError(ValueError):
    """A model asked for that the dataset has no vectors of, or a choice it cannot make; names the models."""


@dataclass(frozen=True)
class EmbeddingModels:
    """`dataset/embedding_models.json`: every model with a vector table, and the one the dataset is
    configured with (the clip_embeddings family's algorithm and version when the tables were last updated)."""

    tables: tuple[VectorTable, ...] = ()
    configured: EmbeddingModel | None = None

    def dims(self) -> dict[EmbeddingModel, int]:
        return {table.model: table.dim for table in self.tables}

    def to_json(self) -> dict[str, Any]:
        configured = self.configured
        return {
            "format": EMBEDDING_MODELS_FORMAT,
            "configured": None if configured is None else {"model": configured.name, "version": configured.version},
            "models": [table.to_json() for table in self.tables],
        }

    def choose(self, name: str | None = None, version: str | None = None) -> VectorTable:
        """The table of model `name` (and `version`); without a name, the configured model's, or the only
        one's. Raises naming the models there are when the choice is not one table."""
        candidates = [t for t in self.tables if name is None or t.model.name == name]
        if version is not None:
            candidates = [t for t in candidates if t.model.version == version]
        configured = [t for t in candidates if t.model == self.configured]
        if len(candidates) > 1 and configured:
            return configured[0]
        if len(candidates) == 1:
            return candidates[0]
        there = ", ".join(str(t.model) for t in self.tables) or "none yet"
        wanted = "a model" if name is None else repr(name if version is None else f"{name} {version}")
        reason = "several match: name one" if candidates else "no vectors of it"
        raise EmbeddingModelError(f"embedding model: {wanted}: {reason} (the dataset's models: {there})")


def load_embedding_models(storage: Storage) -> EmbeddingModels:
    """The models' tables as the last update recorded them; none before the first vectors."""
    key = layout.embedding_models_key()
    data = read_if_exists(storage, key)
    if data is None:
        return EmbeddingModels()
    where = layout.full_location(storage.root, key)
    try:
        document = json.loads(data)
        tables = tuple(
            VectorTable(EmbeddingModel(str(t["model"]), str(t["version"])), int(t["dim"])) for t in document["models"]
        )
        configured = document.get("configured")
        chosen = None if configured is None else EmbeddingModel(str(configured["model"]), str(configured["version"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ci.ClipIndexError(
            f"{where}: not an embedding models file ({exc!r}); delete it and re-materialize"
        ) from None
    return EmbeddingModels(tables, chosen)


def save_embedding_models(storage: Storage, models: EmbeddingModels) -> None:
    put_if_changed(storage, layout.embedding_models_key(), json.dumps(models.to_json(), indent=1).encode())


def open_vectors(
    storage: Storage, model: EmbeddingModel | None = None
) -> tuple[VectorTable, lance.LanceDataset] | None:
    """A model's vector table and its latest version: the reader the near-duplicates and `nearest` share.
    None when the dataset has no vectors of `model` (yet); without a model, the dataset's configured one,
    or its only one (several and none configured raise `EmbeddingModelError`, naming them)."""
    models = load_embedding_models(storage)
    if model is not None and model not in models.dims():
        return None
    if not models.tables:
        return None
    table = models.choose(None if model is None else model.name, None if model is None else model.version)
    return table, table_location(storage, table.key).latest()


def vector_counts(storage: Storage, models: EmbeddingModels) -> list[int]:
    """Each model table's rows, in the order of `models.tables` (Lance metadata: nothing is scanned)."""
    tables = [table_location(storage, table.key).open() for table in models.tables]
    return [table.count_rows() if table is not None else 0 for table in tables]


def embedding_dim(table: lance.LanceDataset) -> int:
    """The size of a vector table's vectors."""
    return int(table.schema.field(ci.EMBEDDING).type.list_size)


def quoted(values: Iterable[str]) -> str:
    """SQL string literals, comma-separated, for an `IN (...)` list."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in sorted(values))


def partitions_filter(partition_keys: Iterable[str]) -> str:
    """A Lance (DataFusion SQL) filter for the rows of these partitions."""
    return f"{ci.PARTITION_KEY} IN ({quoted(partition_keys)})"


def indexed_partitions(table: lance.LanceDataset | None) -> set[str]:
    """The partitions a table has rows of: one column read."""
    if table is None:
        return set()
    column = table.to_table(columns=[ci.PARTITION_KEY]).column(ci.PARTITION_KEY)
    return {str(value) for value in pc.unique(column).to_pylist()}


def replace_partitions(
    location: TableLocation, partition_keys: Sequence[str], rows: pa.Table, *, max_fragments: int = MAX_FRAGMENTS
) -> TableUpdate:
    """Make the table's rows of `partition_keys` exactly `rows`, in one commit; other rows stay put.

    The caller holds the dataset lock. A new table is created from `rows`; compaction follows when
    the table has more than `max_fragments` fragments.
    """
    scope = partitions_filter(partition_keys) if partition_keys else None
    return replace_rows(location, rows, scope, scope, max_fragments=max_fragments)


def replace_rows(
    location: TableLocation,
    rows: pa.Table,
    scope: str | None,
    delete: str | None,
    *,
    max_fragments: int = MAX_FRAGMENTS,
) -> TableUpdate:
    """`rows` in by `clip_id` (replacing the rows of their clips), and the rows matching the `delete`
    filter that `rows` does not have out, in one commit. `scope` filters the rows the commit can change:
    when they are exactly `rows` already, nothing is committed (no version, no fragment)."""
    table = location.open()
    if table is None:
        table = location.write(rows, "create")
        return TableUpdate(table.count_rows(), len(rows), 0, 0, len(table.get_fragments()), table.version)
    if scope is None and not len(rows):
        return unchanged(table)
    if scope is not None and holds_rows(table, scope, rows):
        # A re-materialization of unchanged outputs commits nothing: no version, no fragment.
        return unchanged(table)
    rows = rows.select(table.schema.names).cast(table.schema)
    builder = table.merge_insert(ci.CLIP_ID).when_matched_update_all().when_not_matched_insert_all()
    if delete is not None:
        builder = builder.when_not_matched_by_source_delete(delete)
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


def holds_rows(table: lance.LanceDataset, scope: str, rows: pa.Table) -> bool:
    """Whether the table's rows matching `scope` are exactly `rows` (in clip id order): a commit would change
    nothing."""
    rows = rows.select(table.schema.names).cast(table.schema)
    current = table.to_table(filter=scope)
    if current.num_rows != rows.num_rows:
        return False
    return bool(current.sort_by(ci.CLIP_ID).equals(rows.sort_by(ci.CLIP_ID)))


def unchanged(table: lance.LanceDataset) -> TableUpdate:
    """The figures of an update that committed nothing."""
    return TableUpdate(table.count_rows(), 0, 0, 0, len(table.get_fragments()), table.version)


def rows_of_model(index_rows: pa.Table, model: EmbeddingModel) -> pa.Table:
    """The rows of `index_rows` whose vector `model` made."""
    return index_rows.filter(
        pc.and_(
            pc.equal(index_rows.column(ci.EMBEDDING_MODEL), model.name),
            pc.equal(index_rows.column(ci.EMBEDDING_VERSION), model.version),
        )
    )


def vector_rows(index_rows: pa.Table, model: EmbeddingModel, dim: int) -> pa.Table:
    """A model's vector table rows: the passed clips of `index_rows` that have a vector of that model."""
    of_model = rows_of_model(index_rows, model)
    chosen = of_model.filter(pc.and_(of_model.column(ci.PASSED), pc.is_valid(of_model.column(ci.EMBEDDING))))
    arrays = [chosen.column(name) for name in VECTOR_COLUMNS[:-1]]
    return pa.Table.from_arrays(
        [*arrays, ci.fixed_vectors(chosen.column(ci.EMBEDDING), dim)], schema=vector_schema(dim)
    )


def models_of(index_rows: pa.Table) -> set[EmbeddingModel]:
    """The models the rows' vectors come from."""
    pairs = (
        index_rows.select([ci.EMBEDDING_MODEL, ci.EMBEDDING_VERSION])
        .group_by([ci.EMBEDDING_MODEL, ci.EMBEDDING_VERSION])
        .aggregate([])
    )
    return {
        EmbeddingModel(name, version)
        for name, version in zip(
            pairs.column(ci.EMBEDDING_MODEL).to_pylist(), pairs.column(ci.EMBEDDING_VERSION).to_pylist(), strict=True
        )
        if name is not None
    }


# Rows read at once by the checks that scan a whole table.
SCAN_BATCH_ROWS = 8192
# A whole-table scan keeps this many batches decoded ahead, in an I/O buffer of this size: Lance's defaults
# hold several hundred MB more over 768-d vectors.
SCAN_READAHEAD = 2
SCAN_IO_BUFFER = 32 * 2**20
# Batches between handing freed memory back to the system (`_release_freed_memory`).
SCAN_TRIM_EVERY = 16


@functools.cache
def _malloc_trim() -> Any:
    """glibc's `malloc_trim`, or None where the C library is another."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def _release_freed_memory() -> None:
    """Lance decodes a scan in threads of its own, and glibc keeps what each frees in that thread's arena
    instead of returning it: scanning 3 GB of vectors left about 600 MB of freed memory resident
    (measured with `benchmarks/shards_scale.py`). `malloc_trim` returns it; elsewhere nothing is done."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def scan_batches(
    table: lance.LanceDataset, batch_rows: int, columns: Sequence[str] | None = None, filter: str | None = None
) -> Iterator[pa.RecordBatch]:
    """A whole table `batch_rows` rows at a time, in order, holding a bounded amount of memory whatever the
    table's size (the readahead and I/O buffer above, freed memory handed back as it goes)."""
    batches = table.to_batches(
        columns=list(columns) if columns else None,
        filter=filter,
        batch_size=batch_rows,
        scan_in_order=True,
        batch_readahead=SCAN_READAHEAD,
        fragment_readahead=1,
        io_buffer_size=SCAN_IO_BUFFER,
    )
    for number, batch in enumerate(batches):
        yield batch
        if number % SCAN_TRIM_EVERY == SCAN_TRIM_EVERY - 1:
            _release_freed_memory()
    _release_freed_memory()


def _vector_digests(batches: Iterable[pa.RecordBatch]) -> dict[str, tuple[EmbeddingModel | None, bytes]]:
    """clip id -> (its model where the rows name it, a digest of its float32 vector), a batch at a time
    (never every vector at once)."""
    found: dict[str, tuple[EmbeddingModel | None, bytes]] = {}
    for batch in batches:
        column = batch.column(ci.EMBEDDING)
        values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if pa.types.is_fixed_size_list(column.type):
            offsets = np.arange(len(column) + 1) * column.type.list_size
        else:
            offsets = column.offsets.to_numpy()
        names = batch.schema.names
        models: list[EmbeddingModel | None] = [None] * len(batch)
        if ci.EMBEDDING_MODEL in names:
            model_names = batch.column(ci.EMBEDDING_MODEL).to_pylist()
            pairs = zip(model_names, batch.column(ci.EMBEDDING_VERSION).to_pylist(), strict=True)
            models = [EmbeddingModel(name, version) for name, version in pairs]
        for row, clip_id in enumerate(batch.column(ci.CLIP_ID).to_pylist()):
            vector = values[offsets[row] : offsets[row + 1]]
            found[str(clip_id)] = (models[row], hashlib.blake2b(vector.tobytes(), digest_size=16).digest())
    return found


@dataclass(frozen=True)
class VectorCheck:
    """What `verify_vectors` found: vectors in the tables, and the clips each problem concerns."""

    vectors: int
    missing: list[str]
    extra: list[str]
    differing: list[str]

    @property
    def passed(self) -> bool:
        return not (self.missing or self.extra or self.differing)


def verify_vectors(storage: Storage) -> VectorCheck:
    """The vector tables against the clip index: every passed clip's vector is in its model's table with
    the same values (`missing`, `differing`); every table row is of a passed clip of the index (`extra`).
    A model's rows of clips whose files now hold another model's vector are kept, so they are no problem."""
    index = table_location(storage, layout.clip_index_key()).open()
    expected = {}
    if index is not None:
        scan = scan_batches(
            index,
            SCAN_BATCH_ROWS,
            [ci.CLIP_ID, ci.EMBEDDING, ci.EMBEDDING_MODEL, ci.EMBEDDING_VERSION],
            filter=f"{ci.PASSED} AND {ci.EMBEDDING} IS NOT NULL",
        )
        expected = _vector_digests(scan)
    passed = set(read_clip_index(storage, [ci.CLIP_ID], filter=ci.PASSED).column(ci.CLIP_ID).to_pylist())
    found_of: dict[EmbeddingModel, dict[str, tuple[EmbeddingModel | None, bytes]]] = {}
    for table in load_embedding_models(storage).tables:
        vectors = table_location(storage, table.key).open()
        if vectors is not None:
            scan = scan_batches(vectors, SCAN_BATCH_ROWS, [ci.CLIP_ID, ci.EMBEDDING])
            found_of[table.model] = _vector_digests(scan)
    missing, differing, extra = [], [], []
    for clip_id, (model, digest) in expected.items():
        stored = found_of.get(model, {}) if model is not None else {}
        if clip_id not in stored:
            missing.append(clip_id)
        elif stored[clip_id][1] != digest:
            differing.append(clip_id)
    for of_model in found_of.values():
        extra += [clip_id for clip_id in of_model if clip_id not in passed]
    total = sum(len(of_model) for of_model in found_of.values())
    return VectorCheck(total, sorted(missing), sorted(set(extra)), sorted(differing))


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
    dim = embedding_dim(table)
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
