"""`ce1_embd/`, `ce1_embd_parquet/` (or `iv2_*`, or the algorithm's own prefix): clip embeddings.

A pickle per passed clip and a Parquet file per clip chunk, for the configured algorithm. The pickle
is the array as it arrived, dtype and shape (NeMo's Cosmos-Embed1 float16 `(1, 768)`), so its bytes
are NeMo's. The Parquet keeps the vector's dtype (NeMo widens to float64; clip-assets does not), and its
schema metadata names the model and version that made the vectors (`MODEL_METADATA`,
`VERSION_METADATA`): NeMo's columns say neither, and Cosmos-Embed1's 224p and 448p variants share its
`ce1_` folders, so the curated dataset reads the model from the file that holds the vectors.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.contract import ClipRecord, schema
from clip_assets.families.base import (
    Artifact,
    BuildReport,
    Damaged,
    OutputFamily,
    Problem,
    RecordedOutputs,
    TableColumn,
    VideoContext,
)

PARQUET_COLUMNS = ("id", "embedding")
MODEL_METADATA = b"clip_assets.embedding_model"
VERSION_METADATA = b"clip_assets.embedding_version"


def chunk_embeddings_parquet(ids: list[str], vectors: list[np.ndarray], model: str, version: str) -> bytes:
    """Columns `id` and `embedding` in clip order: what NeMo's `*_embd_parquet` files hold; the model and
    version that made the vectors in the schema's metadata (columns and values stay NeMo's)."""
    flat = np.concatenate(vectors) if vectors else np.empty(0, dtype=np.float32)
    offsets = np.cumsum([0, *(v.size for v in vectors)], dtype=np.int32)
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "embedding": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        }
    ).replace_schema_metadata({MODEL_METADATA: model.encode(), VERSION_METADATA: version.encode()})
    sink = io.BytesIO()
    # No dictionary: ids are unique and floats rarely repeat, so building one is pure cost (about 10x
    # the write time of a chunk's file) and the dictionary page makes the file larger, not smaller.
    pq.write_table(table, sink, compression="snappy", use_dictionary=False)
    return sink.getvalue()


class ClipEmbeddings:
    """Pickles stream per clip; each chunk's Parquet follows once the video's clips are all seen."""

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.settings = video.settings
        self.source_video = video.info.source_video
        self.report = report
        self.per_chunk: dict[int, tuple[list[str], list[np.ndarray]]] = {}

    def add(self, clip: ClipRecord) -> Iterable[Artifact]:
        if clip.filtered:
            return ()
        algorithm = self.settings.embedding_algorithm
        vector = clip.embeddings.get(algorithm)
        if vector is None:
            if self.settings.generate_embeddings:
                others = sorted(clip.embeddings)
                hint = f" (it has {others})" if others else ""
                self.report.warn(f"Clip {clip.uuid} has no {algorithm} embedding{hint}, skipped")
            self.report.counts["clips_without_embedding"] += 1
            return ()
        self.report.counts["embeddings"] += 1
        ids, vectors = self.per_chunk.setdefault(clip.chunk_index, ([], []))
        ids.append(clip.uuid)
        vectors.append(vector.reshape(-1))
        if self.settings.dry_run:
            return ()
        return (Artifact(layout.embedding_pickle_key(algorithm, clip.uuid), pickle.dumps(vector)),)

    def finish(self) -> Iterable[Artifact]:
        if self.settings.dry_run:
            return
        for chunk_index in sorted(self.per_chunk):
            ids, vectors = self.per_chunk[chunk_index]
            self.report.counts["chunk_parquets"] += 1
            self.report.counts["parquet_rows"] += len(ids)
            yield Artifact(
                layout.chunk_embedding_key(self.settings.embedding_algorithm, self.source_video, chunk_index),
                chunk_embeddings_parquet(
                    ids, vectors, self.settings.embedding_algorithm, self.settings.embedding_version
                ),
            )


def embedding_model(metadata: dict[bytes, bytes] | None, parquet_key: str) -> tuple[str, str]:
    """The (model, version) of a chunk's Parquet file: what its metadata says, or, for a file written
    without it (by NeMo, or an older clip-assets), the algorithm its folder stands for and no version."""
    metadata = metadata or {}
    model = metadata.get(MODEL_METADATA)
    if not model:
        return layout.embedding_algorithm_of(parquet_key), ""
    return model.decode("utf-8", "replace"), metadata.get(VERSION_METADATA, b"").decode("utf-8", "replace")


def planned_keys(video: VideoContext) -> Iterator[str]:
    """A pickle per passed clip with the configured algorithm's vector, a Parquet file per chunk of those."""
    algorithm = video.settings.embedding_algorithm
    chunks = set()
    for clip, facts in video.facts.items():
        if algorithm in facts.embedding_algorithms and not facts.filtered:
            chunks.add(facts.chunk_index)
            yield layout.embedding_pickle_key(algorithm, clip)
    for index in sorted(chunks):
        yield layout.chunk_embedding_key(algorithm, video.info.source_video, index)


class _ArrayUnpickler(pickle.Unpickler):
    """Loads pickled numpy arrays and nothing else: a tampered pickle cannot import or call anything."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_embedding(data: bytes) -> np.ndarray:
    """A clip's embedding pickle, as NeMo writes it (`pickle.dumps(ndarray)`), loaded safely."""
    array = _ArrayUnpickler(io.BytesIO(data)).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"holds a {type(array).__name__}, not an array")
    return array


def verify(key: str, data: bytes) -> None:
    """A pickle loads as a finite float array; a chunk's Parquet file has NeMo's columns and types."""
    if key.endswith(".pickle"):
        try:
            array = load_embedding(data)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise Damaged(f"not a pickled numpy array ({exc})") from None
        if array.size == 0 or not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise Damaged(f"not a finite float embedding ({array.dtype}, {array.size} values)")
        return
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise Damaged(f"not a readable Parquet file ({exc})") from None
    if tuple(table.column_names) != PARQUET_COLUMNS:
        raise Damaged(f"columns {table.column_names}, expected {list(PARQUET_COLUMNS)}")
    embedding = table.schema.field("embedding").type
    if not pa.types.is_string(table.schema.field("id").type) or not (
        pa.types.is_list(embedding) and pa.types.is_floating(embedding.value_type)
    ):
        raise Damaged(f"schema {table.schema}, expected id: string, embedding: list<float>")


def cross_check(outputs: RecordedOutputs) -> list[Problem]:
    """Every Parquet row has its clip's pickle, and every pickle is in some chunk's Parquet file."""
    problems: list[Problem] = []
    pickles = {key for key in outputs.keys if key.endswith(".pickle")}
    listed: set[str] = set()
    for key in sorted(outputs.keys):
        if not key.endswith(".parquet"):
            continue
        try:
            ids = pq.read_table(io.BytesIO(outputs.read(key)), columns=["id"]).column("id").to_pylist()
        except (pa.ArrowException, OSError, KeyError):
            continue  # reported by reading every object back
        for clip_id in ids:
            pickle_key = layout.embedding_pickle_key(outputs.settings.embedding_algorithm, clip_id)
            if pickle_key not in pickles:
                problems.append(Problem(key, f"row {clip_id} has no clip pickle {pickle_key}"))
            listed.add(pickle_key)
    problems += [Problem(key, "in no chunk's Parquet file") for key in sorted(pickles - listed)]
    return problems


FAMILY = OutputFamily(
    name="clip_embeddings",
    description="Embeddings of the configured algorithm: a pickle per passed clip ({prefix}_embd/{uuid}.pickle) "
    "and a Parquet file per clip chunk ({prefix}_embd_parquet/{uuid5(video_chunk)}.parquet, columns id, embedding).",
    kinds=frozenset({"pickle", "parquet"}),
    columns=frozenset({schema.EMBEDDINGS}),
    builder=ClipEmbeddings,
    verify=verify,
    cross_check=cross_check,
    tables=(
        TableColumn("id", "string", "the clip's uuid"),
        TableColumn("embedding", "list<float>", "the clip's vector, in the dtype it arrived in"),
    ),
    row_count=lambda report: report.counts["parquet_rows"],
    planned_keys=planned_keys,
)
