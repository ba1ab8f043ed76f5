"""Reading the curated dataset back: the clip index as Arrow, SQL over it, nearest neighbours, shards.

`open_dataset(root)` takes a folder or a store's URL (with the same storage options as
`clip_assets.storage.open_storage`). SQL runs in DuckDB over the Lance tables themselves (DuckDB
scans them as Arrow datasets, so S3 is read by Lance, not by DuckDB's httpfs). Every embedding model
has a vector table of its own; SQL sees them as one view, `vectors`, whose rows name their model.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.shards import load_shards_index
from clip_assets.dataset.tables import (
    VECTOR_COLUMNS,
    EmbeddingModels,
    TableLocation,
    VectorTable,
    load_embedding_models,
    read_clip_index,
    table_location,
)
from clip_assets.storage import Storage, StorageError, open_storage

if TYPE_CHECKING:
    import lance

# Search breadth for the IVF index: partitions probed and candidates re-ranked by exact distance.
NPROBES = 32
REFINE_FACTOR = 10


def read_near_duplicates(storage: Storage) -> pa.Table | None:
    """The near-duplicate decisions (one row per clip; per group member for the transitive rule), or None
    before the first build."""
    try:
        data = storage.read(layout.near_duplicates_key())
    except StorageError:
        if storage.stat(layout.near_duplicates_key()) is None:
            return None
        raise
    return pq.read_table(io.BytesIO(data))


class DatasetNotFoundError(FileNotFoundError):
    """`open_dataset` on a root where the dataset was never built."""


class ClipDataset:
    """A curated dataset's derived tables, read through one storage root."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def root(self) -> str:
        return self.storage.root

    def _table(self, key: str) -> lance.LanceDataset | None:
        location: TableLocation = table_location(self.storage, key)
        return location.open()

    def clips(self, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        """The clip index as a pyarrow Table: one row per clip (docs/dataset.md lists the columns)."""
        return read_clip_index(self.storage, columns, filter)

    def near_duplicates(self) -> pa.Table | None:
        return read_near_duplicates(self.storage)

    def embedding_models(self) -> EmbeddingModels:
        """The models the dataset has vectors of (each with its size), and the one it is configured with."""
        return load_embedding_models(self.storage)

    def _vector_table(self, model: str | None, version: str | None) -> VectorTable:
        return self.embedding_models().choose(model, version)

    def query(self, sql: str) -> pa.Table:
        """`sql` in DuckDB, over the views `clips` (the index), `vectors` (every model's vector table, one
        row per clip and model: `embedding_model`, `embedding_version`, `embedding` as FLOAT[]) and
        `near_duplicates`."""
        connection = duckdb.connect()
        try:
            index = self._table(layout.clip_index_key())
            connection.register("clips", index if index is not None else self.clips())
            parts = []
            for number, table in enumerate(self.embedding_models().tables):
                vectors = self._table(table.key)
                if vectors is not None:
                    connection.register(f"vectors_{number}", vectors)
                    columns = ", ".join(VECTOR_COLUMNS[:-1])
                    parts.append(f"SELECT {columns}, {ci.EMBEDDING}::FLOAT[] AS {ci.EMBEDDING} FROM vectors_{number}")
            if parts:
                connection.execute("CREATE TEMPORARY VIEW vectors AS " + " UNION ALL ".join(parts))
            duplicates = self.near_duplicates()
            if duplicates is not None:
                connection.register("near_duplicates", duplicates)
            return connection.sql(sql).to_arrow_table()
        finally:
            connection.close()

    def vector(self, clip_id: str, model: str | None = None, version: str | None = None) -> np.ndarray:
        """A clip's embedding by `model` (and `version`; by default the dataset's configured model, or its
        only one) as its vector table holds it (float32)."""
        table = self._vector_table(model, version)
        vectors = self._table(table.key)
        found = None
        if vectors is not None:
            found = vectors.to_table(columns=[ci.EMBEDDING], filter=f"{ci.CLIP_ID} = '{_literal(clip_id)}'")
        if found is None or not len(found):
            raise KeyError(f"{self.root}: clip {clip_id!r} has no {table.model} vector in {table.key}")
        return np.asarray(found.column(ci.EMBEDDING)[0].values.to_numpy(), dtype=np.float32)

    def nearest(
        self, clip_id: str, k: int = 10, model: str | None = None, version: str | None = None
    ) -> list[tuple[str, float]]:
        """The `k` clips closest to `clip_id` by cosine distance between their vectors of `model` (by default
        the dataset's configured model, or its only one), nearest first, the clip itself excluded."""
        return self.nearest_to(self.vector(clip_id, model, version), k, exclude=clip_id, model=model, version=version)

    def nearest_to(
        self,
        vector: np.ndarray,
        k: int = 10,
        exclude: str | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> list[tuple[str, float]]:
        """The `k` clips closest to a query vector of `model` by cosine distance, nearest first."""
        models = self.embedding_models()
        if not models.tables:
            return []
        vectors = self._table(models.choose(model, version).key)
        if vectors is None:
            return []
        query: Mapping[str, Any] = {
            "column": ci.EMBEDDING,
            "q": np.asarray(vector, dtype=np.float32).reshape(-1),
            "k": k + (1 if exclude else 0),
            "metric": "cosine",
            "nprobes": NPROBES,
            "refine_factor": REFINE_FACTOR,
        }
        found = vectors.to_table(columns=[ci.CLIP_ID, "_distance"], nearest=dict(query))
        pairs = zip(found.column(ci.CLIP_ID).to_pylist(), found.column("_distance").to_pylist(), strict=True)
        return [(str(c), float(d)) for c, d in pairs if c != exclude][:k]

    def shards(self) -> list[str]:
        """The training shards' URLs in the order of their index file; [] before shards were written."""
        index = load_shards_index(self.storage)
        return [] if index is None else [layout.full_location(self.root, shard.key) for shard in index.shards]


def _literal(value: str) -> str:
    return value.replace("'", "''")


def open_dataset(root: str, storage_options: Mapping[str, Any] | None = None) -> ClipDataset:
    """The curated dataset under `root` (a folder or a store's URL), reached as `open_storage` reaches it
    (`storage_options={"endpoint_url": ..., "addressing_style": "path"}`; credentials from the store's chain).
    Raises `DatasetNotFoundError`, naming the root, where no dataset was built."""
    dataset = ClipDataset(open_storage(root, storage_options))
    if dataset._table(layout.clip_index_key()) is None:
        raise DatasetNotFoundError(
            f"{dataset.root}: no curated dataset here ({layout.clip_index_key()} was never written); build it "
            "with `clip-assets backfill --all` or materialize the dataset group"
        )
    return dataset
