"""Finding complete processed videos in an inbox, incrementally: shared by the sensor and `discover`.

A file counts once its Parquet footer can be read; producers publish by rename or a single upload, so
a half-written file is skipped and picked up on a later pass when it is complete. A video delivered
in chunk files counts once all of its chunks are there and readable (`engine.inbox`); until then it
is reported as waiting, and a re-sent chunk makes it new again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.contract.partition_keys import encode_partition_key
from clip_assets.engine.inbox import ChunkSet, InboxListing, both_forms, chunked_fingerprint
from clip_assets.storage import ObjectInfo, Storage


class DagsterInstanceLike(Protocol):
    """The two DagsterInstance methods registration needs (kept abstract so this module stays Dagster-free)."""

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]: ...

    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class DiscoveredVideo:
    partition_key: str
    key: str
    fingerprint: str


# How long after the newest file seen a file may still turn up with an older modification time: a rename
# that lands after a listing keeps the time of its last write, and on S3 a multipart upload's LastModified
# can be the time it started. Files within this window are remembered individually.
LOOKBACK_NS = 3600 * 1_000_000_000


def _token(info: ObjectInfo) -> str:
    """A short, fixed-size stand-in for (key, fingerprint), so the cursor stays small."""
    return hashlib.sha256(f"{info.key}\0{info.fingerprint}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DiscoveryCursor:
    """The newest modification time handled, and every file handled within `LOOKBACK_NS` before it.

    Files older than the window were handled on an earlier pass; inside it, each handled file's key and
    fingerprint is remembered by a 16-character token. Its size depends on how many files arrive per
    window, not on how many the inbox holds; a rewritten file has a new fingerprint and is found again.
    """

    newest_ns: int = -1
    recent: frozenset[str] = frozenset()

    def to_str(self) -> str:
        return json.dumps({"newest_ns": self.newest_ns, "recent": sorted(self.recent)})

    @classmethod
    def parse(cls, text: str | None) -> DiscoveryCursor:
        if not text:
            return cls()
        doc = json.loads(text)
        if "newest_ns" not in doc:  # a cursor of the first release: start over, runs are keyed anyway
            return cls()
        return cls(int(doc["newest_ns"]), frozenset(doc["recent"]))

    @property
    def horizon_ns(self) -> int:
        return self.newest_ns - LOOKBACK_NS

    def is_new(self, info: ObjectInfo) -> bool:
        return info.modified_ns >= self.horizon_ns and _token(info) not in self.recent


def is_complete(storage: Storage, key: str) -> bool:
    try:
        with storage.open(key) as handle:
            pq.read_metadata(handle)
    except (pa.ArrowException, OSError):
        return False
    return True


@dataclass
class DiscoveryResult:
    """`incomplete`: files without a readable footer yet; `waiting`: chunked videos not complete, and why."""

    videos: list[DiscoveredVideo]
    incomplete: list[str]
    cursor: DiscoveryCursor
    waiting: list[str] = field(default_factory=list)


def discover(storage: Storage, cursor: DiscoveryCursor | None = None) -> DiscoveryResult:
    """Complete videos new or changed since `cursor` (all of them without one), and the next cursor.

    A chunked video is new when any of its chunk files is; all of its files are then read (footers
    only) and handled together, so it is registered once, complete, with its chunks' combined fingerprint.
    """
    cursor = cursor or DiscoveryCursor()
    result = DiscoveryResult([], [], cursor)
    handled: list[ObjectInfo] = []
    listing = InboxListing()
    single_keys: set[str] = set()
    complete: list[ObjectInfo] = []  # new single files; registered once the listing shows no chunks of theirs
    for info in listing.singles(storage.list()):
        single_keys.add(info.key)
        if not cursor.is_new(info):
            if info.modified_ns >= cursor.horizon_ns:
                handled.append(info)
        elif not is_complete(storage, info.key):
            result.incomplete.append(info.key)
        else:
            complete.append(info)
    for info in complete:
        if info.key not in listing.chunk_sets:  # also delivered in chunks: reported with them
            result.videos.append(DiscoveredVideo(encode_partition_key(info.key), info.key, info.fingerprint))
            handled.append(info)
    for video_key, chunks in listing.chunk_sets.items():
        handled += _discover_chunked(storage, cursor, chunks, video_key in single_keys, result)
    newest = max([cursor.newest_ns, *(info.modified_ns for info in handled)])
    recent = frozenset(_token(info) for info in handled if info.modified_ns >= newest - LOOKBACK_NS)
    result.videos.sort(key=lambda v: v.partition_key)
    result.incomplete.sort()
    result.waiting.sort()
    result.cursor = DiscoveryCursor(newest, recent)
    return result


def _discover_chunked(
    storage: Storage, cursor: DiscoveryCursor, chunks: ChunkSet, has_single: bool, result: DiscoveryResult
) -> list[ObjectInfo]:
    """Registers one chunked video in `result` when it is new and complete; returns the files it handled."""
    files = [*chunks.found.values()]
    if not any(cursor.is_new(info) for info in files) and not chunks.misnamed and not has_single:
        return [info for info in files if info.modified_ns >= cursor.horizon_ns]
    partition_key = encode_partition_key(chunks.video_key)
    problem = both_forms(chunks.video_key) if has_single else chunks.problem()
    if problem is not None:
        result.waiting.append(f"{partition_key}: {problem}")
        return []
    unreadable = [info.key for info in files if not is_complete(storage, info.key)]
    if unreadable:
        result.incomplete += unreadable
        return []
    fingerprint = chunked_fingerprint(files)
    result.videos.append(DiscoveredVideo(partition_key, chunks.folder.rstrip("/"), fingerprint))
    return files


def unknown_partition_keys(known: Sequence[str], videos: Sequence[DiscoveredVideo]) -> list[str]:
    """The discovered videos' keys that are not among the `known` partitions yet, sorted."""
    return sorted({v.partition_key for v in videos} - set(known))


@dataclass(frozen=True)
class RunBatch:
    """Discovered videos that one run handles: consecutive partitions, so a key range names them."""

    videos: tuple[DiscoveredVideo, ...]

    @property
    def first(self) -> str:
        return self.videos[0].partition_key

    @property
    def last(self) -> str:
        return self.videos[-1].partition_key

    @property
    def run_key(self) -> str:
        """Names exactly these file versions: a rewritten file makes a new run, a repeat none."""
        if len(self.videos) == 1:
            return f"{self.first}@{self.videos[0].fingerprint}"
        versions = "\n".join(f"{v.partition_key}@{v.fingerprint}" for v in self.videos)
        return f"{self.first}...{self.last}@{hashlib.sha256(versions.encode()).hexdigest()[:16]}"


def batch_runs(videos: Sequence[DiscoveredVideo], partition_order: Sequence[str], max_per_run: int) -> list[RunBatch]:
    """Group videos into runs of at most `max_per_run` partitions that are consecutive in `partition_order`.

    A batch of new files is added as partitions in one go, so it is one contiguous range: 10,000 new
    videos cost 10,000 / `max_per_run` runs, not 10,000 run start-ups. Scattered changed files each
    become a run of their own.
    """
    by_key = {video.partition_key: video for video in videos}
    ranges = consecutive_ranges(list(by_key), partition_order, max_per_run)
    return [RunBatch(tuple(by_key[key] for key in keys)) for keys in ranges]


def consecutive_ranges(keys: Sequence[str], partition_order: Sequence[str], max_per_run: int) -> list[list[str]]:
    """`keys` grouped into runs of at most `max_per_run` that are consecutive in `partition_order`, so
    each group is a key range one run can take (Dagster's range tags)."""
    position = {key: index for index, key in enumerate(partition_order)}
    ranges: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        current = ranges[-1] if ranges else None
        if current is not None and len(current) < max_per_run and position[key] == position[current[-1]] + 1:
            current.append(key)
        else:
            ranges.append([key])
    return ranges


def register(
    instance: DagsterInstanceLike, storage: Storage, partitions_name: str
) -> tuple[DiscoveryResult, list[str]]:
    """Discover every complete file and add the partitions the instance does not know yet."""
    result = discover(storage)
    new_keys = unknown_partition_keys(instance.get_dynamic_partitions(partitions_name), result.videos)
    if new_keys:
        instance.add_dynamic_partitions(partitions_name, new_keys)
    return result, new_keys
