"""WebDataset training shards of the passed, non-duplicate clips, kept in step with the clip index.

Each sample is one clip: `<clip id>.mp4` (the clip file), `<clip id>.json` (its clip index row: captions
and enhanced captions by model, scores, span and duration, probe facts, the keys of its files in the
tree) and `<clip id>.npy` (its embedding, float32; a clip without one has no `.npy`). The tars are
byte-for-byte reproducible: members sorted by name, mtime 0, uid/gid 0, no user or group names, mode
0644, ustar format.

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
older index never gets other bytes than that index promised. A shard whose members' fingerprint (clip
ids, MP4 sha256, JSON document, embedding) matches the previous index is kept without reading anything;
a rebuilt one whose sha256 matches an existing object is not uploaded again.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import mmap
import tarfile
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa

from clip_assets import layout
from clip_assets.dataset import clip_index
from clip_assets.storage import Storage, StorageError
from clip_assets.thread_pools import shared_pool

SHARDS_FORMAT = 1
# WebDataset's advice is shards of a few hundred MB: big enough to stream at full speed, small enough
# to shuffle at shard level and to rebuild one without rewriting much.
DEFAULT_SHARD_BYTES = 256 * 2**20
# MP4 reads in flight while a shard is written (at most twice as many held in memory).
DEFAULT_READ_WORKERS = 8
_TAR_BLOCK = 512
_KEY_BITS = 128
_HALF_BITS = 64
# Members of a sample, in the order they are written (sorted by extension, as WebDataset groups them).
_MEMBERS = ("json", "mp4", "npy")

# The clip index columns the membership is made of.
_REQUIRED = (
    clip_index.CLIP_ID,
    clip_index.PARTITION_KEY,
    clip_index.PASSED,
    clip_index.MP4_KEY,
    clip_index.MP4_BYTES,
    clip_index.MP4_SHA256,
    clip_index.EMBEDDING,
)
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

    def npy(self) -> bytes:
        """The embedding as a `.npy` file (float32, one dimension): `numpy.load` reads it back."""
        buffer = io.BytesIO()
        np.save(buffer, np.frombuffer(self.embedding, dtype=np.float32), allow_pickle=False)
        return buffer.getvalue()


@dataclass(frozen=True)
class PlannedShard:
    """A trie node that is a shard: the `depth` leading bits of the sort key equal `prefix`."""

    depth: int
    prefix: int
    samples: tuple[ShardSample, ...]

    @property
    def range_name(self) -> str:
        digits = max(1, -(-self.depth // 4))
        return f"d{self.depth:03d}-{self.prefix:0{digits}x}"

    @property
    def fingerprint(self) -> str:
        """Changes whenever any byte of the shard would: the members' ids, MP4 hashes, documents, embeddings."""
        digest = hashlib.sha256(f"format {SHARDS_FORMAT}\n".encode())
        for sample in self.samples:
            digest.update(f"{sample.clip_id} {sample.mp4_sha256} {len(sample.document)}\n".encode())
            digest.update(sample.document)
            digest.update(sample.embedding)
        return digest.hexdigest()


@dataclass(frozen=True)
class ShardEntry:
    """What the index file says about one shard."""

    range_name: str
    key: str
    samples: int
    bytes: int
    sha256: str
    fingerprint: str
    clip_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "range": self.range_name,
            "key": self.key,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "fingerprint": self.fingerprint,
            "clip_ids": list(self.clip_ids),
        }


@dataclass(frozen=True)
class ShardsIndex:
    """`training_shards/index.json`: the shards in key order, and the size they were cut to."""

    shard_bytes: int
    shards: tuple[ShardEntry, ...]

    @property
    def samples(self) -> int:
        return sum(entry.samples for entry in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SHARDS_FORMAT,
            "shard_bytes": self.shard_bytes,
            "shards_count": len(self.shards),
            "samples": self.samples,
            "bytes": self.total_bytes,
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


def _npy_size(dimensions: int) -> int:
    return len(ShardSample("", "", "", b"", bytes(4 * dimensions), 0, 0).npy())


def _half_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def sort_key(partition_key: str, clip_id: str) -> int:
    """The clip's place in the trie: its video's hash, then its own (docstring of this module)."""
    return (_half_hash(partition_key) << _HALF_BITS) | _half_hash(clip_id)


def _embeddings(rows: pa.Table) -> tuple[np.ndarray[Any, np.dtype[np.float32]], list[bool]]:
    """The embedding column as one (rows, dimensions) float32 array, without a Python object per value,
    and which rows have one (the others' rows are zeros)."""
    column = rows.column(clip_index.EMBEDDING).combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise ShardError(f"clip index: column {clip_index.EMBEDDING!r} is {column.type}, not a fixed-size list")
    valid = column.is_valid()
    matrix = np.zeros((len(column), column.type.list_size), dtype=np.float32)
    present = column.filter(valid)
    positions = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
    matrix[positions] = present.flatten().to_numpy(zero_copy_only=False).reshape(len(present), matrix.shape[1])
    return matrix, valid.to_pylist()


def _document(row: dict[str, Any]) -> bytes:
    """A row as JSON, keys sorted and no spaces, so the same row is always the same bytes."""
    try:
        return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as error:
        raise ShardError(f"clip index: clip {row[clip_index.CLIP_ID]}: {error}") from None


def shard_samples(rows: pa.Table, excluded: Collection[str] = ()) -> list[ShardSample]:
    """The samples of the passed clips of `rows` (clip index rows) whose ids are not in `excluded`
    (the near-duplicates not kept), sorted by their key."""
    missing = [name for name in _REQUIRED if name not in rows.column_names]
    if missing:
        raise ShardError(f"clip index: columns {missing} are missing (it has {sorted(rows.column_names)})")
    ids = rows.column(clip_index.CLIP_ID).to_pylist()
    passed = rows.column(clip_index.PASSED).to_pylist()
    selected = [i for i, (clip_id, ok) in enumerate(zip(ids, passed, strict=True)) if ok and clip_id not in excluded]
    rows = rows.take(pa.array(selected, type=pa.int64()))
    embeddings, valid = _embeddings(rows)
    npy_size = _tar_size(_npy_size(embeddings.shape[1]))
    documents = rows.drop_columns([name for name in _NOT_IN_DOCUMENT if name in rows.column_names]).to_pylist()
    samples = []
    for row, embedding, has_embedding in zip(documents, embeddings, valid, strict=True):
        clip_id = row[clip_index.CLIP_ID]
        empty = [name for name in _REQUIRED if name != clip_index.EMBEDDING and row[name] is None]
        if empty:
            raise ShardError(f"clip index: clip {clip_id}: field {empty[0]!r} is empty for a passed clip")
        document = _document(row)
        vector = embedding.tobytes() if has_embedding else b""
        size = _tar_size(len(document)) + _tar_size(row[clip_index.MP4_BYTES]) + (npy_size if vector else 0)
        key = sort_key(row[clip_index.PARTITION_KEY], clip_id)
        mp4_key, mp4_sha256 = row[clip_index.MP4_KEY], row[clip_index.MP4_SHA256]
        samples.append(ShardSample(clip_id, mp4_key, mp4_sha256, document, vector, size, key))
    samples.sort(key=lambda sample: sample.sort_key)
    return samples


def plan_shards(samples: Sequence[ShardSample], shard_bytes: int) -> list[PlannedShard]:
    """The trie's shards for `samples` (sorted by key), in key order; the rule is this module's docstring."""
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes must be positive, not {shard_bytes}")
    keys = [sample.sort_key for sample in samples]
    if keys != sorted(keys):
        raise ValueError("samples must be sorted by their sort_key")
    running = [0]
    for sample in samples:
        running.append(running[-1] + sample.size)
    shards: list[PlannedShard] = []
    pending = [(0, 0, 0, len(samples))]  # (depth, prefix, first, end), last pushed is taken first
    while pending:
        depth, prefix, first, end = pending.pop()
        if first == end:
            continue
        if _archive_size(running[end] - running[first]) <= shard_bytes or end - first == 1 or depth == _KEY_BITS:
            members = sorted(samples[first:end], key=lambda sample: sample.clip_id)  # tar members sorted by name
            shards.append(PlannedShard(depth, prefix, tuple(members)))
            continue
        upper_half = ((prefix << 1) | 1) << (_KEY_BITS - depth - 1)
        middle = bisect.bisect_left(keys, upper_half, first, end)
        pending.append((depth + 1, (prefix << 1) | 1, middle, end))
        pending.append((depth + 1, prefix << 1, first, middle))
    return shards


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


def _bounded_map(function: Callable[[int], bytes], count: int, workers: int) -> Iterator[bytes]:
    """`function(i)` for i in range(count), in order, with at most `2 * workers` results held at once."""
    pool = shared_pool(workers)
    in_flight: deque[Future[bytes]] = deque()
    for position in range(count):
        in_flight.append(pool.submit(function, position))
        if len(in_flight) >= 2 * workers:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def write_tar(storage: Storage, shard: PlannedShard, target: IO[bytes], workers: int) -> tuple[str, int]:
    """Write the shard's tar into `target`, reading its MP4s from `storage`; returns its sha256 and size.

    Each MP4 is checked against the sha256 the clip index recorded, so a shard never pairs a clip file
    newer than the index with the index's captions and embedding.
    """

    def read(position: int) -> bytes:
        sample = shard.samples[position]
        data = storage.read(sample.mp4_key)
        if hashlib.sha256(data).hexdigest() != sample.mp4_sha256:
            raise ShardError(
                f"{layout.full_location(storage.root, sample.mp4_key)}: clip {sample.clip_id}: content does not "
                f"match the clip index's {clip_index.MP4_SHA256} (the file is newer: materialize the clip index first)"
            )
        return data

    hashing = _HashingFile(target)
    mp4s = _bounded_map(read, len(shard.samples), workers)
    with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as archive:  # type: ignore[call-overload]
        for sample in shard.samples:
            members = {"json": sample.document, "mp4": next(mp4s), "npy": sample.npy() if sample.embedding else None}
            for extension in _MEMBERS:
                data = members[extension]
                if data is None:  # a clip without an embedding has no .npy
                    continue
                archive.addfile(_member(f"{sample.clip_id}.{extension}", len(data)), io.BytesIO(data))
    return hashing.digest.hexdigest(), hashing.size


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
    return ShardsIndex(int(document.get("shard_bytes", 0)), entries)


def _store(
    storage: Storage, shard: PlannedShard, existing: dict[str, int], workers: int, update: ShardsUpdate
) -> ShardEntry:
    """Build one shard into a temporary file and upload it unless an identical object is there already."""
    with tempfile.TemporaryFile(prefix="clip-assets-shard-") as temp:
        sha256, size = write_tar(storage, shard, temp, workers)
        key = layout.training_shard_key(f"{shard.range_name}-{sha256[:16]}")
        if existing.get(key) == size:  # the key carries the content's hash
            update.rebuilt_identical.append(key)
        else:
            temp.flush()
            # The tar is handed to the storage as a view of the file's pages, never as one bytes object.
            with mmap.mmap(temp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    storage.put(key, view, sha256=sha256)
                finally:
                    view.release()
            update.written.append(key)
            update.bytes_written += size
    return ShardEntry(
        shard.range_name,
        key,
        len(shard.samples),
        size,
        sha256,
        shard.fingerprint,
        tuple(s.clip_id for s in shard.samples),
    )


def update_shards(
    storage: Storage,
    rows: pa.Table,
    excluded: Collection[str] = (),
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    workers: int = DEFAULT_READ_WORKERS,
    lock_timeout_s: float = 600.0,
) -> ShardsUpdate:
    """Bring `training_shards/` in step with `rows` (the clip index) minus `excluded` (duplicates not kept).

    New and changed shards are written first, then the index, then the shards the index no longer
    names are deleted (with any left by an update that died before its index), so the index always
    names complete shards.
    """
    planned = plan_shards(shard_samples(rows, excluded), shard_bytes)
    with storage.lock(layout.training_shards_lock_key(), lock_timeout_s):
        previous = load_shards_index(storage)
        by_range = {entry.range_name: entry for entry in previous.shards} if previous else {}
        existing = {info.key: info.size for info in storage.list(layout.TRAINING_SHARDS) if info.key.endswith(".tar")}
        update = ShardsUpdate(ShardsIndex(shard_bytes, ()))
        entries = []
        for shard in planned:
            old = by_range.get(shard.range_name)
            if old is not None and old.fingerprint == shard.fingerprint and existing.get(old.key) == old.bytes:
                entries.append(old)
                update.kept.append(old.key)
            else:
                entries.append(_store(storage, shard, existing, workers, update))
        update.index = ShardsIndex(shard_bytes, tuple(entries))
        if update.index != previous:  # an unchanged dataset writes nothing at all
            document = json.dumps(update.index.to_json(), indent=1).encode()
            storage.put(layout.training_shards_index_key(), document)
        named = {entry.key for entry in entries}
        for key in sorted(existing.keys() - named):
            storage.delete(key)
            update.removed.append(key)
    return update


def duplicates_not_kept(groups: pa.Table | None) -> frozenset[str]:
    """The clips the near-duplicates table (`clip_id`, `kept` per row, whichever rule wrote it) leaves out of
    training."""
    if groups is None:
        return frozenset()
    members = zip(groups.column(clip_index.CLIP_ID).to_pylist(), groups.column("kept").to_pylist(), strict=True)
    return frozenset(clip_id for clip_id, kept in members if not kept)


def verify_shards(storage: Storage, rows: pa.Table, excluded: Collection[str] = ()) -> list[str]:
    """What is wrong with the shards on `storage` against the clip index `rows`: members missing, extra or
    twice, and shard objects missing or of other bytes (by size, and by sha256 where the backend keeps one)."""
    index = load_shards_index(storage)
    if index is None:
        return [f"{layout.full_location(storage.root, layout.training_shards_index_key())} does not exist"]
    expected = {sample.clip_id for sample in shard_samples(rows, excluded)}
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
    keys = [entry.key for entry in index.shards]
    for entry, info in zip(index.shards, storage.stat_many(keys), strict=True):
        where = layout.full_location(storage.root, entry.key)
        if info is None:
            problems.append(f"{where} is missing")
        elif info.size != entry.bytes or (info.sha256 is not None and info.sha256 != entry.sha256):
            problems.append(f"{where} is not the {entry.bytes} bytes with sha256 {entry.sha256} the index names")
    return problems
