"""WebDataset training shards of the passed, non-duplicate clips, kept in step with the clip index.

Each sample is one clip: `<clip id>.mp4` (the clip file), `<clip id>.json` (its clip index row: captions
and enhanced captions by model, scores, span and duration, probe facts, the keys of its files in the
tree) and `<clip id>.npy` (its vector of the shards' embedding model, float32; a clip without one has
no `.npy`). The tars are byte-for-byte reproducible: members sorted by name, mtime 0, uid/gid 0, no user
or group names, mode 0644, ustar format.

Membership is a binary trie over a 128-bit sort key per clip: the first 64 bits hash the clip's video,
the last 64 its clip id. A range of keys (a trie node) is one shard when its samples' tar bytes (end
blocks and record padding included) fit in `shard_bytes`, or when it holds one sample; otherwise it
is split in two by its next bit. Whether a node is a shard therefore depends only on the clips inside
its range, so:

- a video's clips share a shard unless the video alone is bigger than `shard_bytes` (then its clip-id
  bits split it), and adding a video rebuilds only the one shard whose range its key falls in (or
  splits it); every other shard keeps its members, bytes and sha256;
- removing or shrinking a video rebuilds its shard and, when the parent range now fits, merges it with
  its sibling range: at most the shards of one range of at most `shard_bytes`.

A shard's key names its range and the start of its sha256 (`d005-0a-<sha>.tar`), so a reader holding an
older index never gets other bytes than that index promised. A shard whose fingerprint (a digest of
its members' rows as the shard holds them: ids, MP4 sha256, JSON document, vector) matches the
previous index is kept without reading anything; a rebuilt one whose sha256 matches an existing object
is not uploaded again.

One clip never stops the shards: a passed clip whose MP4 is absent (NeMo writes the metadata of a clip
whose buffer is absent, so the index has no `mp4_key`), missing from storage or damaged (not the size
or sha256 the index records) is left out of its shard, and the index file lists it with the reason
(`strict` fails instead). A shard that left clips out is rebuilt once their files are right again.

Memory is bounded, not proportional to the dataset's bytes: the index is read `batch_rows` rows at a
time, twice. The first pass keeps 64 bytes a clip (its sort key, size, digest and place in the index)
and plans the trie; the second takes only the rows of the shards to build, `batch_rows` at a time, in
member order, while at most `2 * workers` MP4s are in flight.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import mmap
import tarfile
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from clip_assets import layout
from clip_assets.dataset import clip_index
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.tables import scan_batches
from clip_assets.storage import Storage, StorageError, read_if_exists
from clip_assets.thread_pools import shared_pool

if TYPE_CHECKING:
    import lance

SHARDS_FORMAT = 1
# WebDataset's advice is shards of a few hundred MB: big enough to stream at full speed, small enough
# to shuffle at shard level and to rebuild one without rewriting much.
DEFAULT_SHARD_BYTES = 256 * 2**20
# MP4 reads in flight while a shard is written (at most twice as many held in memory).
DEFAULT_READ_WORKERS = 8
# Clip index rows read at once: what bounds the memory of an update besides 64 bytes a clip.
DEFAULT_BATCH_ROWS = 4096
_TAR_BLOCK = 512
# tarfile writes a member's header, data and padding separately: buffered, they reach the file in large writes.
_WRITE_BUFFER = 1 << 20
_KEY_BITS = 128
_HALF_BITS = 64
_HALF_MASK = (1 << _HALF_BITS) - 1
# Members of a sample, in the order they are written (sorted by extension, as WebDataset groups them).
_MEMBERS = ("json", "mp4", "npy")

# Why a passed clip is not in the shards.
ABSENT = "absent"
MISSING = "missing"
DAMAGED = "damaged"
_REASONS = {
    ABSENT: "no MP4 was written (the clip index has no mp4_key)",
    MISSING: "its MP4 is not in storage",
    DAMAGED: "its MP4 is not the size or sha256 the clip index records",
}

# The clip index columns the membership is made of.
_REQUIRED = (
    clip_index.CLIP_ID,
    clip_index.PARTITION_KEY,
    clip_index.PASSED,
    clip_index.MP4_KEY,
    clip_index.MP4_BYTES,
    clip_index.MP4_SHA256,
    clip_index.EMBEDDING,
    clip_index.EMBEDDING_MODEL,
    clip_index.EMBEDDING_VERSION,
)
_MP4_FIELDS = (clip_index.MP4_KEY, clip_index.MP4_BYTES, clip_index.MP4_SHA256)
# What a passed clip's row must hold; a row without its MP4's fields is a clip left out (`ABSENT`).
_NOT_EMPTY = (clip_index.CLIP_ID, clip_index.PARTITION_KEY, clip_index.PASSED, *_MP4_FIELDS)
# Left out of the JSON: the embedding is the `.npy`, and full URIs would tie the bytes to where the output
# root is (its keys are there, relative to the root), so the same clips make the same shards anywhere.
_NOT_IN_DOCUMENT = [
    clip_index.EMBEDDING,
    clip_index.MP4_URI,
    clip_index.PREVIEW_URIS,
    clip_index.METADATA_URI,
    clip_index.EMBEDDING_URI,
]


class ShardError(ValueError):
    """A clip index row or a stored member that cannot go into a shard; names the clip, file and field."""


@dataclass(frozen=True)
class ShardSample:
    """One clip as a shard holds it; `size` is its exact share of the tar (headers and padding included)."""

    clip_id: str
    mp4_key: str
    mp4_sha256: str
    document: bytes
    embedding: bytes
    size: int
    sort_key: int
    mp4_bytes: int = 0

    def npy(self) -> bytes:
        """The embedding as a `.npy` file (float32, one dimension): `numpy.load` reads it back."""
        return _npy_header(len(self.embedding) // 4) + self.embedding

    @property
    def digest(self) -> bytes:
        """Changes whenever any byte the sample puts in a shard would: its id, MP4 hash, document, vector."""
        digest = hashlib.sha256(f"{self.clip_id} {self.mp4_sha256} {len(self.document)}\n".encode())
        digest.update(self.document)
        digest.update(self.embedding)
        return digest.digest()


@dataclass(frozen=True)
class LeftOut:
    """A passed, non-duplicate clip that is in no shard, and why (`ABSENT`, `MISSING`, `DAMAGED`)."""

    clip_id: str
    reason: str
    mp4_key: str | None = None
    mp4_bytes: int | None = None
    mp4_sha256: str | None = None

    @property
    def explanation(self) -> str:
        return _REASONS[self.reason]

    def to_json(self) -> dict[str, Any]:
        return {
            "clip_id": self.clip_id,
            "reason": self.reason,
            "mp4_key": self.mp4_key,
            "mp4_bytes": self.mp4_bytes,
            "mp4_sha256": self.mp4_sha256,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LeftOut:
        if document["reason"] not in _REASONS:
            raise ValueError(f"reason {document['reason']!r} is not one of {sorted(_REASONS)}")
        size = document.get("mp4_bytes")
        return cls(
            str(document["clip_id"]),
            str(document["reason"]),
            document.get("mp4_key"),
            None if size is None else int(size),
            document.get("mp4_sha256"),
        )


def fingerprint(digests: Iterable[bytes]) -> str:
    """A shard's fingerprint from its members' digests (in any order: they are sorted)."""
    combined = hashlib.sha256(f"format {SHARDS_FORMAT}\n".encode())
    for digest in sorted(digests):
        combined.update(digest)
    return combined.hexdigest()


def range_name(depth: int, prefix: int) -> str:
    digits = max(1, -(-depth // 4))
    return f"d{depth:03d}-{prefix:0{digits}x}"


@dataclass(frozen=True)
class PlannedShard:
    """A trie node that is a shard: the `depth` leading bits of the sort key equal `prefix`."""

    depth: int
    prefix: int
    samples: tuple[ShardSample, ...]

    @property
    def range_name(self) -> str:
        return range_name(self.depth, self.prefix)

    @property
    def fingerprint(self) -> str:
        return fingerprint(sample.digest for sample in self.samples)


@dataclass(frozen=True)
class ShardEntry:
    """What the index file says about one shard: its members, and the clips of its range it left out."""

    range_name: str
    key: str
    samples: int
    bytes: int
    sha256: str
    fingerprint: str
    clip_ids: tuple[str, ...]
    left_out: tuple[LeftOut, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "range": self.range_name,
            "key": self.key,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "fingerprint": self.fingerprint,
            "clip_ids": list(self.clip_ids),
            "left_out": [clip.to_json() for clip in self.left_out],
        }


@dataclass(frozen=True)
class ShardsIndex:
    """`training_shards/index.json`: the shards in key order, the size they were cut to, the embedding
    model of their `.npy` members, and the passed clips left out (`absent` ones belong to no range)."""

    shard_bytes: int
    shards: tuple[ShardEntry, ...]
    model: EmbeddingModel | None = None
    absent: tuple[LeftOut, ...] = ()

    @property
    def samples(self) -> int:
        return sum(entry.samples for entry in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.shards)

    @property
    def left_out(self) -> list[LeftOut]:
        """Every passed, non-duplicate clip in no shard, in clip id order."""
        return sorted([*self.absent, *(c for e in self.shards for c in e.left_out)], key=lambda c: c.clip_id)

    def to_json(self) -> dict[str, Any]:
        left_out = self.left_out
        return {
            "format": SHARDS_FORMAT,
            "shard_bytes": self.shard_bytes,
            "embedding_model": None if self.model is None else self.model.name,
            "embedding_version": None if self.model is None else self.model.version,
            "shards_count": len(self.shards),
            "samples": self.samples,
            "bytes": self.total_bytes,
            "left_out_count": len(left_out),
            "left_out": [clip.to_json() for clip in left_out],
            "shards": [entry.to_json() for entry in self.shards],
        }


@dataclass
class ShardsUpdate:
    """What one update did: the new index and which shards it wrote, kept (unread) or removed."""

    index: ShardsIndex
    written: list[str] = field(default_factory=list)
    rebuilt_identical: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_written: int = 0


def _tar_size(size: int) -> int:
    return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _archive_size(members: int) -> int:
    """A tar's size from its members' (headers and padded data): two zero blocks end it, and tarfile
    pads the whole to a multiple of its 10 KiB record."""
    return -(-(members + 2 * _TAR_BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


@functools.cache
def _npy_header(dimensions: int) -> bytes:
    """What `numpy.save` writes before a float32 vector of this size: the same for every vector of it."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(dimensions, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()[: -4 * dimensions or None]


def _npy_size(dimensions: int) -> int:
    return len(_npy_header(dimensions)) + 4 * dimensions


def _half_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def sort_key(partition_key: str, clip_id: str) -> int:
    """The clip's place in the trie: its video's hash, then its own (docstring of this module)."""
    return (_half_hash(partition_key) << _HALF_BITS) | _half_hash(clip_id)


def _vectors(rows: pa.Table | pa.RecordBatch) -> list[np.ndarray | None]:
    """Each row's embedding as float32 values without a Python object per value (None where it has none)."""
    column = rows.column(clip_index.EMBEDDING)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
        raise ShardError(f"clip index: column {clip_index.EMBEDDING!r} is {column.type}, not a list of floats")
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if pa.types.is_fixed_size_list(column.type):
        offsets = np.arange(len(column) + 1) * column.type.list_size + column.offset * column.type.list_size
    else:
        offsets = column.offsets.to_numpy()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[row] : offsets[row + 1]] if valid[row] else None for row in range(len(column))]


def _document(row: dict[str, Any]) -> bytes:
    """A row as JSON, keys sorted and no spaces, so the same row is always the same bytes."""
    try:
        return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as error:
        raise ShardError(f"clip index: clip {row[clip_index.CLIP_ID]}: {error}") from None


class _ModelChoice:
    """The embedding model the shards' `.npy` members come from: the one asked for, or else the one the
    rows' vectors are of (rows of two models, with none asked for, cannot make one set of shards)."""

    def __init__(self, model: EmbeddingModel | None) -> None:
        self.model = model
        self.asked = model is not None

    def takes(self, name: str | None, version: str | None) -> bool:
        if name is None:
            return False
        found = EmbeddingModel(name, version or "")
        if self.model is None:
            self.model = found
        elif found != self.model and not self.asked:
            raise ShardError(
                f"clip index: vectors of {self.model} and of {found}: name the model the shards are made from"
            )
        return found == self.model


def _samples_of(
    rows: pa.Table | pa.RecordBatch,
    excluded: Collection[str],
    choice: _ModelChoice,
    left_out: list[LeftOut] | None,
) -> Iterator[tuple[int, ShardSample]]:
    """(row number, sample) for each passed clip of `rows` not in `excluded`. A passed clip without an MP4
    goes to `left_out`, or raises a `ShardError` naming it when `left_out` is None."""
    missing = [name for name in _REQUIRED if name not in rows.schema.names]
    if missing:
        raise ShardError(f"clip index: columns {missing} are missing (it has {sorted(rows.schema.names)})")
    vectors = _vectors(rows)
    documents = rows.drop_columns([name for name in _NOT_IN_DOCUMENT if name in rows.schema.names]).to_pylist()
    for number, (row, vector) in enumerate(zip(documents, vectors, strict=True)):
        clip_id = row[clip_index.CLIP_ID]
        if not row[clip_index.PASSED] or clip_id in excluded:
            continue
        empty = [name for name in _NOT_EMPTY if row[name] is None]
        if empty:
            if left_out is None or not set(empty) <= set(_MP4_FIELDS):
                raise ShardError(f"clip index: clip {clip_id}: field {empty[0]!r} is empty for a passed clip")
            left_out.append(LeftOut(clip_id, ABSENT, row[clip_index.MP4_KEY]))
            continue
        has_vector = vector is not None and choice.takes(
            row[clip_index.EMBEDDING_MODEL], row[clip_index.EMBEDDING_VERSION]
        )
        # The document names the model of the sample's `.npy`, and no model when it has none.
        row[clip_index.EMBEDDING_MODEL] = choice.model.name if has_vector and choice.model else None
        row[clip_index.EMBEDDING_VERSION] = choice.model.version if has_vector and choice.model else None
        document = _document(row)
        embedding = vector.tobytes() if has_vector and vector is not None else b""
        npy = _tar_size(_npy_size(len(embedding) // 4)) if embedding else 0
        size = _tar_size(len(document)) + _tar_size(row[clip_index.MP4_BYTES]) + npy
        key = sort_key(row[clip_index.PARTITION_KEY], clip_id)
        mp4 = (row[clip_index.MP4_KEY], row[clip_index.MP4_SHA256])
        yield number, ShardSample(clip_id, mp4[0], mp4[1], document, embedding, size, key, row[clip_index.MP4_BYTES])


def shard_samples(
    rows: pa.Table,
    excluded: Collection[str] = (),
    *,
    model: EmbeddingModel | None = None,
    left_out: list[LeftOut] | None = None,
) -> list[ShardSample]:
    """The samples of the passed clips of `rows` (clip index rows) whose ids are not in `excluded`
    (the near-duplicates not kept), sorted by their key; `.npy` members of `model`'s vectors (by default
    the one model the rows' vectors are of). Clips without an MP4 go to `left_out` (else raise)."""
    samples = [sample for _, sample in _samples_of(rows, excluded, _ModelChoice(model), left_out)]
    samples.sort(key=lambda sample: sample.sort_key)
    return samples


def _batches(rows: pa.Table | lance.LanceDataset, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if isinstance(rows, pa.Table):
        yield from rows.to_batches(max_chunksize=batch_rows)
        return
    yield from scan_batches(rows, batch_rows)


def _take(rows: pa.Table | lance.LanceDataset, positions: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    indices = pa.array(positions, type=pa.int64())
    if isinstance(rows, pa.Table):
        taken = rows.take(indices)
        return taken if columns is None else taken.select(columns)
    table: pa.Table = rows.take(indices, columns=columns)
    return table


@dataclass
class _Catalog:
    """The first pass over the index: per sample its sort key, size, digest and place in the index, in
    key order (64 bytes a clip); the clips left out before any file is read; the `.npy` model."""

    high: np.ndarray
    low: np.ndarray
    sizes: np.ndarray
    digests: np.ndarray
    positions: np.ndarray
    absent: list[LeftOut]
    model: EmbeddingModel | None
    clip_ids: np.ndarray | None = None

    def fingerprint(self, first: int, end: int) -> str:
        return fingerprint(bytes(digest) for digest in self.digests[first:end])


def _catalog(
    rows: pa.Table | lance.LanceDataset,
    excluded: Collection[str],
    model: EmbeddingModel | None,
    strict: bool,
    batch_rows: int,
    with_clip_ids: bool = False,
) -> _Catalog:
    """One pass over the index, `batch_rows` rows at a time, keeping 64 bytes of each sample."""
    choice = _ModelChoice(model)
    absent: list[LeftOut] = []
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("high", "low", "sizes", "digests", "positions")}
    clip_ids: list[str] = []
    offset = 0
    for batch in _batches(rows, batch_rows):
        samples = list(_samples_of(batch, excluded, choice, None if strict else absent))
        keys = [sample.sort_key for _, sample in samples]
        columns["high"].append(np.array([key >> _HALF_BITS for key in keys], dtype=np.uint64))
        columns["low"].append(np.array([key & _HALF_MASK for key in keys], dtype=np.uint64))
        columns["sizes"].append(np.array([sample.size for _, sample in samples], dtype=np.int64))
        columns["digests"].append(np.array([sample.digest for _, sample in samples], dtype="S32"))
        columns["positions"].append(np.array([offset + number for number, _ in samples], dtype=np.int64))
        if with_clip_ids:
            clip_ids += [sample.clip_id for _, sample in samples]
        offset += batch.num_rows
    joined = {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in columns.items()}
    order = np.lexsort((joined["low"], joined["high"]))
    return _Catalog(
        high=joined["high"].astype(np.uint64)[order],
        low=joined["low"].astype(np.uint64)[order],
        sizes=joined["sizes"].astype(np.int64)[order],
        digests=joined["digests"].astype("S32")[order],
        positions=joined["positions"].astype(np.int64)[order],
        absent=sorted(absent, key=lambda clip: clip.clip_id),
        model=choice.model,
        clip_ids=np.array(clip_ids, dtype=object)[order] if with_clip_ids else None,
    )


def plan_ranges(
    high: np.ndarray, low: np.ndarray, sizes: np.ndarray, shard_bytes: int
) -> list[tuple[int, int, int, int]]:
    """The trie's shards over samples sorted by key (its two 64-bit halves), as (depth, prefix, first,
    end) in key order; the rule is this module's docstring."""
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes must be positive, not {shard_bytes}")
    running = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    ranges: list[tuple[int, int, int, int]] = []
    pending = [(0, 0, 0, len(sizes))]  # (depth, prefix, first, end), last pushed is taken first
    while pending:
        depth, prefix, first, end = pending.pop()
        if first == end:
            continue
        if _archive_size(int(running[end] - running[first])) <= shard_bytes or end - first == 1 or depth == _KEY_BITS:
            ranges.append((depth, prefix, first, end))
            continue
        upper = ((prefix << 1) | 1) << (_KEY_BITS - depth - 1)  # the first key of the upper half
        if depth < _HALF_BITS:
            middle = first + int(np.searchsorted(high[first:end], np.uint64(upper >> _HALF_BITS), side="left"))
        else:  # every key of the range has the same high half
            middle = first + int(np.searchsorted(low[first:end], np.uint64(upper & _HALF_MASK), side="left"))
        pending.append((depth + 1, (prefix << 1) | 1, middle, end))
        pending.append((depth + 1, prefix << 1, first, middle))
    return ranges


def plan_shards(samples: Sequence[ShardSample], shard_bytes: int) -> list[PlannedShard]:
    """The trie's shards for `samples` (sorted by key), in key order, members sorted by clip id."""
    keys = [sample.sort_key for sample in samples]
    if keys != sorted(keys):
        raise ValueError("samples must be sorted by their sort_key")
    high = np.array([key >> _HALF_BITS for key in keys], dtype=np.uint64)
    low = np.array([key & _HALF_MASK for key in keys], dtype=np.uint64)
    sizes = np.array([sample.size for sample in samples], dtype=np.int64)
    return [
        PlannedShard(depth, prefix, tuple(sorted(samples[first:end], key=lambda sample: sample.clip_id)))
        for depth, prefix, first, end in plan_ranges(high, low, sizes, shard_bytes)
    ]


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingFile:
    """A write-only file that hashes what passes through it (tarfile writes sequentially)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)

    def tell(self) -> int:
        return self.size


def _bounded_map(
    function: Callable[[ShardSample], bytes | LeftOut], samples: Iterable[ShardSample], workers: int
) -> Iterator[tuple[ShardSample, bytes | LeftOut]]:
    """(sample, `function(sample)`) in order, with at most `2 * workers` results held at once."""
    pool = shared_pool(workers)
    in_flight: deque[tuple[ShardSample, Future[bytes | LeftOut]]] = deque()
    for sample in samples:
        in_flight.append((sample, pool.submit(function, sample)))
        if len(in_flight) >= 2 * workers:
            done, future = in_flight.popleft()
            yield done, future.result()
    while in_flight:
        done, future = in_flight.popleft()
        yield done, future.result()


def _read_mp4(storage: Storage, sample: ShardSample, strict: bool) -> bytes | LeftOut:
    """The clip's MP4 as the index records it; a `LeftOut` (or, `strict`, a `ShardError`) when it is
    missing or other bytes: a shard never pairs a clip file newer than the index with the index's row."""
    data = read_if_exists(storage, sample.mp4_key)
    if data is not None and len(data) == sample.mp4_bytes and hashlib.sha256(data).hexdigest() == sample.mp4_sha256:
        return data
    if strict:
        where = f"{layout.full_location(storage.root, sample.mp4_key)}: clip {sample.clip_id}"
        if data is None:
            raise ShardError(f"{where}: missing, though the clip index records it (materialize the clip files)")
        raise ShardError(
            f"{where}: content does not match the clip index's {clip_index.MP4_SHA256} (the file is newer: "
            "materialize the clip index first)"
        )
    reason = MISSING if data is None else DAMAGED
    return LeftOut(sample.clip_id, reason, sample.mp4_key, sample.mp4_bytes, sample.mp4_sha256)


@dataclass
class WrittenTar:
    """A tar as written: its sha256, size, the clips in it and those left out."""

    sha256: str
    size: int
    clip_ids: list[str]
    left_out: list[LeftOut]


def write_tar(
    storage: Storage, samples: Iterable[ShardSample], target: IO[bytes], workers: int, strict: bool = False
) -> WrittenTar:
    """Write a shard of `samples` (in clip id order) into `target`, reading their MP4s from `storage`, each
    checked against the size and sha256 the clip index recorded."""
    hashing = _HashingFile(target)
    written = WrittenTar("", 0, [], [])
    with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as archive:  # type: ignore[call-overload]
        for sample, mp4 in _bounded_map(lambda sample: _read_mp4(storage, sample, strict), samples, workers):
            if isinstance(mp4, LeftOut):
                written.left_out.append(mp4)
                continue
            members = {"json": sample.document, "mp4": mp4, "npy": sample.npy() if sample.embedding else None}
            for extension in _MEMBERS:
                data = members[extension]
                if data is None:  # a clip without an embedding has no .npy
                    continue
                archive.addfile(_member(f"{sample.clip_id}.{extension}", len(data)), io.BytesIO(data))
            written.clip_ids.append(sample.clip_id)
    written.sha256, written.size = hashing.digest.hexdigest(), hashing.size
    return written


def _entry_from_json(document: dict[str, Any], where: str) -> ShardEntry:
    try:
        return ShardEntry(
            range_name=str(document["range"]),
            key=str(document["key"]),
            samples=int(document["samples"]),
            bytes=int(document["bytes"]),
            sha256=str(document["sha256"]),
            fingerprint=str(document["fingerprint"]),
            clip_ids=tuple(str(clip_id) for clip_id in document["clip_ids"]),
            left_out=tuple(LeftOut.from_json(clip) for clip in document.get("left_out", [])),
        )
    except KeyError as missing:
        raise ShardError(f"{where}: field {missing.args[0]!r} is missing") from None
    except (TypeError, ValueError) as error:
        raise ShardError(f"{where}: {error}") from None


def load_shards_index(storage: Storage) -> ShardsIndex | None:
    """The index file as the last update wrote it; None before the first one."""
    key = layout.training_shards_index_key()
    try:
        document = json.loads(storage.read(key))
    except StorageError:
        if storage.stat(key) is None:
            return None
        raise
    location = layout.full_location(storage.root, key)
    if not isinstance(document, dict) or document.get("format") != SHARDS_FORMAT:
        raise ShardError(f"{location}: field 'format' is not {SHARDS_FORMAT}")
    shards = document.get("shards")
    if not isinstance(shards, list):
        raise ShardError(f"{location}: field 'shards' is not a list")
    entries = tuple(_entry_from_json(entry, f"{location}: shards[{i}]") for i, entry in enumerate(shards))
    in_ranges = {clip.clip_id for entry in entries for clip in entry.left_out}
    try:
        absent = tuple(
            LeftOut.from_json(clip) for clip in document.get("left_out", []) if clip["clip_id"] not in in_ranges
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ShardError(f"{location}: field 'left_out': {error!r}") from None
    name = document.get("embedding_model")
    model = None if name is None else EmbeddingModel(str(name), str(document.get("embedding_version") or ""))
    return ShardsIndex(int(document.get("shard_bytes", 0)), entries, model, absent)


def _range_samples(
    rows: pa.Table | lance.LanceDataset,
    catalog: _Catalog,
    first: int,
    end: int,
    excluded: Collection[str],
    batch_rows: int,
) -> Iterator[ShardSample]:
    """The samples of one planned range, in clip id order, `batch_rows` index rows taken at a time."""
    positions = np.sort(catalog.positions[first:end])
    ids = _take(rows, positions, [clip_index.CLIP_ID]).column(clip_index.CLIP_ID).to_pylist()
    ordered = positions[np.argsort(np.array(ids, dtype=object), kind="stable")]
    choice = _ModelChoice(catalog.model)
    for start in range(0, len(ordered), batch_rows):
        taken = _take(rows, ordered[start : start + batch_rows])
        for _, sample in _samples_of(taken, excluded, choice, []):
            yield sample


def _readable_again(storage: Storage, left_out: Sequence[LeftOut]) -> bool:
    """Whether any clip a kept shard left out has its MP4 back as the index records it."""
    missing_or_damaged = [clip for clip in left_out if clip.reason != ABSENT and clip.mp4_key]
    infos = storage.stat_many([clip.mp4_key for clip in missing_or_damaged if clip.mp4_key])
    for clip, info in zip(missing_or_damaged, infos, strict=True):
        if info is None or info.size != clip.mp4_bytes:
            continue
        if info.sha256 is not None:
            if info.sha256 == clip.mp4_sha256:
                return True
            continue
        data = read_if_exists(storage, clip.mp4_key or "")
        if data is not None and hashlib.sha256(data).hexdigest() == clip.mp4_sha256:
            return True
    return False


def _store(
    storage: Storage,
    name: str,
    fingerprint_: str,
    samples: Iterable[ShardSample],
    existing: dict[str, int],
    workers: int,
    strict: bool,
    update: ShardsUpdate,
) -> ShardEntry:
    """Build one shard into a temporary file and upload it unless an identical object is there already."""
    with tempfile.TemporaryFile(prefix="clip-assets-shard-", buffering=_WRITE_BUFFER) as temp:
        tar = write_tar(storage, samples, temp, workers, strict)
        key = layout.training_shard_key(f"{name}-{tar.sha256[:16]}")
        if existing.get(key) == tar.size:  # the key carries the content's hash
            update.rebuilt_identical.append(key)
        else:
            temp.flush()
            # The tar is handed to the storage as a view of the file's pages, never as one bytes object.
            with mmap.mmap(temp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    storage.put(key, view, sha256=tar.sha256)
                finally:
                    view.release()
            update.written.append(key)
            update.bytes_written += tar.size
    return ShardEntry(
        name, key, len(tar.clip_ids), tar.size, tar.sha256, fingerprint_, tuple(tar.clip_ids), tuple(tar.left_out)
    )


def update_shards(
    storage: Storage,
    rows: pa.Table | lance.LanceDataset,
    excluded: Collection[str] = (),
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    model: EmbeddingModel | None = None,
    strict: bool = False,
    workers: int = DEFAULT_READ_WORKERS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    lock_timeout_s: float = 600.0,
) -> ShardsUpdate:
    """Bring `training_shards/` in step with `rows` (the clip index: a table, or the Lance dataset, read
    `batch_rows` rows at a time) minus `excluded` (duplicates not kept), with `.npy` members of `model`.

    New and changed shards are written first, then the index, then the shards the index no longer
    names are deleted (with any left by an update that died before its index), so the index always
    names complete shards. A clip whose MP4 is absent, missing or damaged is left out and listed
    (`strict`: fails the update naming it).
    """
    catalog = _catalog(rows, excluded, model, strict, batch_rows)
    ranges = plan_ranges(catalog.high, catalog.low, catalog.sizes, shard_bytes)
    previous, existing, plan = _plan(storage, catalog, ranges, strict)
    if previous is not None and all(shard.stands is not None for shard in plan):
        index = ShardsIndex(
            shard_bytes, tuple(s.stands for s in plan if s.stands), catalog.model, tuple(catalog.absent)
        )
        if index == previous and not existing.keys() - {entry.key for entry in index.shards}:
            # Up to date: no lock taken, nothing written (looked at again under the lock otherwise).
            return ShardsUpdate(index, kept=[entry.key for entry in index.shards])
    with storage.lock(layout.training_shards_lock_key(), lock_timeout_s):
        previous, existing, plan = _plan(storage, catalog, ranges, strict)
        update = ShardsUpdate(ShardsIndex(shard_bytes, ()))
        entries = []
        for shard in plan:
            if shard.stands is not None:
                entries.append(shard.stands)
                update.kept.append(shard.stands.key)
            else:
                samples = _range_samples(rows, catalog, shard.first, shard.end, excluded, batch_rows)
                entries.append(
                    _store(storage, shard.name, shard.fingerprint, samples, existing, workers, strict, update)
                )
        update.index = ShardsIndex(shard_bytes, tuple(entries), catalog.model, tuple(catalog.absent))
        if update.index != previous:  # an unchanged dataset writes nothing at all
            document = json.dumps(update.index.to_json(), indent=1).encode()
            storage.put(layout.training_shards_index_key(), document)
        named = {entry.key for entry in entries}
        for key in sorted(existing.keys() - named):
            storage.delete(key)
            update.removed.append(key)
    return update


@dataclass(frozen=True)
class _PlannedRange:
    """One range of the plan, and its stored shard when that is still exactly what the range makes."""

    name: str
    fingerprint: str
    first: int
    end: int
    stands: ShardEntry | None


def _plan(
    storage: Storage, catalog: _Catalog, ranges: Sequence[tuple[int, int, int, int]], strict: bool
) -> tuple[ShardsIndex | None, dict[str, int], list[_PlannedRange]]:
    """The stored index, the stored tars (key -> size) and each range with the shard of it that still stands: same
    members and rows, its tar whole, none of the clips it left out readable again."""
    previous = load_shards_index(storage)
    by_range = {entry.range_name: entry for entry in previous.shards} if previous else {}
    existing = {info.key: info.size for info in storage.list(layout.TRAINING_SHARDS) if info.key.endswith(".tar")}
    plan = []
    for depth, prefix, first, end in ranges:
        name, planned = range_name(depth, prefix), catalog.fingerprint(first, end)
        old = by_range.get(name)
        stands = (
            old is not None
            and old.fingerprint == planned
            and existing.get(old.key) == old.bytes
            and not (old.left_out and (strict or _readable_again(storage, old.left_out)))
        )
        plan.append(_PlannedRange(name, planned, first, end, old if stands else None))
    return previous, existing, plan


def duplicates_not_kept(groups: pa.Table | None) -> frozenset[str]:
    """The clips the near-duplicates table (`clip_id`, `kept` per row, whichever rule wrote it) leaves out of
    training."""
    if groups is None:
        return frozenset()
    members = zip(groups.column(clip_index.CLIP_ID).to_pylist(), groups.column("kept").to_pylist(), strict=True)
    return frozenset(clip_id for clip_id, kept in members if not kept)


def verify_shards(
    storage: Storage,
    rows: pa.Table | lance.LanceDataset,
    excluded: Collection[str] = (),
    *,
    model: EmbeddingModel | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[str]:
    """What is wrong with the shards on `storage` against the clip index `rows`: members missing, extra or
    twice, shards out of date with the index (a member's row or vector changed since the shard was
    built), and shard objects missing or of other bytes (by size, and by sha256 where the backend keeps
    one). Clips the index file lists as left out are not problems here (the check warns of them)."""
    index = load_shards_index(storage)
    if index is None:
        return [f"{layout.full_location(storage.root, layout.training_shards_index_key())} does not exist"]
    catalog = _catalog(rows, excluded, model if model is not None else index.model, False, batch_rows, True)
    left_out = {clip.clip_id for clip in index.left_out}
    expected = {str(clip_id) for clip_id in catalog.clip_ids if clip_id not in left_out}  # type: ignore[union-attr]
    members = [clip_id for entry in index.shards for clip_id in entry.clip_ids]
    problems = []
    counts = Counter(members)
    twice = sorted(clip_id for clip_id, count in counts.items() if count > 1)
    if twice:
        problems.append(f"{len(twice)} clips in more than one shard, e.g. {twice[0]}")
    missing, extra = sorted(expected - set(members)), sorted(set(members) - expected)
    if missing:
        problems.append(f"{len(missing)} passed, non-duplicate clips in no shard, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} shard members not passed non-duplicate clips of the index, e.g. {extra[0]}")
    absent = {clip.clip_id for clip in catalog.absent}
    listed_absent = {clip.clip_id for clip in index.absent}
    if absent != listed_absent:
        problems.append(
            f"the index file lists {len(listed_absent)} clips without an MP4, the clip index has {len(absent)}"
        )
    planned = {
        range_name(depth, prefix): catalog.fingerprint(first, end)
        for depth, prefix, first, end in plan_ranges(catalog.high, catalog.low, catalog.sizes, index.shard_bytes)
    }
    stale = sorted(entry.key for entry in index.shards if planned.get(entry.range_name) != entry.fingerprint)
    if stale:
        problems.append(
            f"{len(stale)} shards out of date with the clip index (a member's row or vector changed, or the "
            f"ranges did, since they were built), e.g. {layout.full_location(storage.root, stale[0])}: "
            "materialize training_shards"
        )
    keys = [entry.key for entry in index.shards]
    for entry, info in zip(index.shards, storage.stat_many(keys), strict=True):
        where = layout.full_location(storage.root, entry.key)
        if info is None:
            problems.append(f"{where} is missing")
        elif info.size != entry.bytes or (info.sha256 is not None and info.sha256 != entry.sha256):
            problems.append(f"{where} is not the {entry.bytes} bytes with sha256 {entry.sha256} the index names")
    return problems
