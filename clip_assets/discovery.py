"""Finding complete processed videos in an inbox, incrementally: shared by the sensor and `discover`.

A file counts once its Parquet footer can be read; producers publish by rename or a single upload, so
a half-written file is skipped and picked up on a later pass when it is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.partition_keys import SUFFIX, encode_partition_key
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


@dataclass(frozen=True)
class DiscoveryCursor:
    """The newest modification time already handled, and the keys that share it.

    Constant size whatever the inbox holds; a file rewritten later gets a newer time and is found again.
    """

    modified_ns: int = -1
    keys_at_newest: tuple[str, ...] = ()

    def to_str(self) -> str:
        return json.dumps({"modified_ns": self.modified_ns, "keys": list(self.keys_at_newest)})

    @classmethod
    def parse(cls, text: str | None) -> DiscoveryCursor:
        if not text:
            return cls()
        doc = json.loads(text)
        return cls(int(doc["modified_ns"]), tuple(doc["keys"]))

    def is_new(self, info: ObjectInfo) -> bool:
        return info.modified_ns > self.modified_ns or (
            info.modified_ns == self.modified_ns and info.key not in self.keys_at_newest
        )


def is_candidate(key: str) -> bool:
    """A `.parquet` file that is not hidden or internal (producers' temp files start with '.')."""
    return key.endswith(SUFFIX) and not any(part.startswith((".", "_")) for part in key.split("/"))


def is_complete(storage: Storage, key: str) -> bool:
    try:
        with storage.open(key) as handle:
            pq.read_metadata(handle)
    except (pa.ArrowException, OSError):
        return False
    return True


@dataclass
class DiscoveryResult:
    videos: list[DiscoveredVideo]
    incomplete: list[str]
    cursor: DiscoveryCursor


def _candidates(storage: Storage) -> Iterator[ObjectInfo]:
    return (info for info in storage.list() if is_candidate(info.key))


def discover(storage: Storage, cursor: DiscoveryCursor | None = None) -> DiscoveryResult:
    """Complete files new or changed since `cursor` (all of them without one), and the next cursor."""
    cursor = cursor or DiscoveryCursor()
    videos: list[DiscoveredVideo] = []
    incomplete: list[str] = []
    newest = cursor.modified_ns
    keys_at_newest = set(cursor.keys_at_newest)
    for info in _candidates(storage):
        if not cursor.is_new(info):
            continue
        if not is_complete(storage, info.key):
            incomplete.append(info.key)
            continue
        videos.append(DiscoveredVideo(encode_partition_key(info.key), info.key, info.fingerprint))
        if info.modified_ns > newest:
            newest, keys_at_newest = info.modified_ns, {info.key}
        elif info.modified_ns == newest:
            keys_at_newest.add(info.key)
    videos.sort(key=lambda v: v.partition_key)
    return DiscoveryResult(videos, sorted(incomplete), DiscoveryCursor(newest, tuple(sorted(keys_at_newest))))


def unknown_partition_keys(
    instance: DagsterInstanceLike, partitions_name: str, videos: Sequence[DiscoveredVideo]
) -> list[str]:
    """The discovered videos' keys the instance has no partition for yet, sorted."""
    known = set(instance.get_dynamic_partitions(partitions_name))
    return sorted({v.partition_key for v in videos} - known)


def register(
    instance: DagsterInstanceLike, storage: Storage, partitions_name: str
) -> tuple[DiscoveryResult, list[str]]:
    """Discover every complete file and add the partitions the instance does not know yet."""
    result = discover(storage)
    new_keys = unknown_partition_keys(instance, partitions_name, result.videos)
    if new_keys:
        instance.add_dynamic_partitions(partitions_name, new_keys)
    return result, new_keys
