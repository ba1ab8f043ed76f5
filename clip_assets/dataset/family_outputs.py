"""One output family's files of one partition, as its manifest records them: what anything downstream of the
families reads, without knowing the tree's layout.

The IO manager of the families (`clip_assets.components.io_manager`) hands these to every downstream
asset, the derived products and a user's own alike:

    def long_clips(clip_metadata: FamilyPartition) -> MaterializeResult:
        long = [doc for _, doc in clip_metadata.documents() if doc["duration_span"][1] - doc["duration_span"][0] > 3]

Nothing is read until asked: the manifest on first use (one read), then each file as it is read. The
view names what was written, never the inbox.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.dataset.clip_index import ClipIndexError, EmbeddingModel
from clip_assets.engine.manifest import ManifestEntry, PartitionManifest, load_manifest
from clip_assets.families import FAMILIES, clip_embeddings
from clip_assets.storage import Storage
from clip_assets.thread_pools import shared_pool

# Files read at once (each a round trip on an object store).
READ_WORKERS = 8


@dataclass(frozen=True)
class FamilyPartition:
    """`family`'s outputs of `partition_key` under `storage`'s root."""

    family: str
    partition_key: str
    storage: Storage

    @cached_property
    def manifest(self) -> PartitionManifest | None:
        """What the family recorded for the partition; None where it was never written (or was removed)."""
        return load_manifest(self.storage, self.family, self.partition_key)

    @property
    def written(self) -> bool:
        return self.manifest is not None

    @property
    def entries(self) -> dict[str, ManifestEntry]:
        """Each recorded key with its size and sha256."""
        return dict(self.manifest.entries) if self.manifest is not None else {}

    @property
    def keys(self) -> list[str]:
        """The recorded keys, relative to the output root, sorted."""
        return sorted(self.entries)

    def url(self, key: str) -> str:
        return layout.full_location(self.storage.root, key)

    @property
    def urls(self) -> list[str]:
        """The recorded files' full paths or URLs, in key order."""
        return [self.url(key) for key in self.keys]

    def read(self, key: str) -> bytes:
        return self.storage.read(key)

    def open(self, key: str) -> BinaryIO:
        """A seekable reader of one recorded file, streamed (ranged reads on an object store)."""
        return self.storage.open(key)

    def documents(self, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
        """Each recorded JSON document below `prefix` (the clip metadata's `metas/v0/`, a video summary's
        folders) and its content, in key order, a few read at a time."""
        keys = [key for key in self.keys if key.startswith(prefix) and key.endswith(".json")]
        for start in range(0, len(keys), READ_WORKERS * 4):
            batch = keys[start : start + READ_WORKERS * 4]
            yield from zip(batch, shared_pool(READ_WORKERS).map(self._document, batch), strict=True)

    def _document(self, key: str) -> dict[str, Any]:
        try:
            document = json.loads(self.storage.read(key))
        except ValueError as exc:
            raise ClipIndexError(f"{self.url(key)}: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ClipIndexError(f"{self.url(key)}: not a JSON object")
        return document

    def embedding_files(self) -> list[str]:
        """The per-chunk embedding Parquet files the family recorded."""
        return [key for key in self.keys if key.endswith(".parquet")]

    def vectors(self) -> Iterator[tuple[str, dict[str, tuple[np.ndarray, str]], EmbeddingModel]]:
        """Each embedding Parquet file: its key, its vectors by clip id (with the key), the model that made them."""
        keys = self.embedding_files()
        for key, (found, model) in zip(keys, shared_pool(READ_WORKERS).map(self._vectors, keys), strict=True):
            yield key, found, model

    def _vectors(self, key: str) -> tuple[dict[str, tuple[np.ndarray, str]], EmbeddingModel]:
        where = self.url(key)
        try:
            table = pq.read_table(io.BytesIO(self.storage.read(key)), columns=list(clip_embeddings.PARQUET_COLUMNS))
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise ClipIndexError(f"{where}: not a readable embedding Parquet file ({exc})") from None
        model = EmbeddingModel(*clip_embeddings.embedding_model(table.schema.metadata, key))
        try:
            layout.check_embedding_model(model.name, model.version)
        except layout.LayoutError as exc:
            named = clip_embeddings.MODEL_METADATA.decode()
            raise ClipIndexError(f"{where}: schema metadata {named!r}: {exc}") from None
        ids = table.column("id").to_pylist()
        column = table.column("embedding").combine_chunks()
        if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
            raise ClipIndexError(f"{where}: field 'embedding' is {column.type}, expected a list of floats")
        if column.null_count:
            row = column.is_null().to_pylist().index(True)
            raise ClipIndexError(f"{where}: field 'embedding' is null in row {row} (clip {ids[row]})")
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        vectors = {str(clip_id): (values[offsets[row] : offsets[row + 1]], key) for row, clip_id in enumerate(ids)}
        return vectors, model


def family_partitions(storage: Storage, partition_key: str) -> dict[str, FamilyPartition]:
    """Every family's view of one partition."""
    return {family.name: FamilyPartition(family.name, partition_key, storage) for family in FAMILIES}
