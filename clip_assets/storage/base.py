"""The storage interface the engine, discovery and the dataset readers are written against."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class StorageError(OSError):
    """A storage operation that failed; the message names the key and the backend's reason."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat returns: enough to fingerprint a file without reading it."""

    key: str
    size: int
    # Nanoseconds since the epoch (local mtime; S3 LastModified).
    modified_ns: int
    # A content tag when the backend has one (S3 ETag); None for local files.
    etag: str | None = None
    # The content's sha256 when the backend records it with the object (S3 object metadata written
    # by clip-assets); None when unknown. Lets a writer prove identity without downloading.
    sha256: str | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever the object's content may have changed."""
        return f"{self.size}:{self.etag or self.modified_ns}"


class Lease(Protocol):
    """Exclusive ownership of a lock key, held while a partition of a family is written."""

    def check(self) -> None:
        """Raise StorageError if ownership was lost (an S3 lease that could not be renewed in time)."""
        ...


class ConditionalWrites(Protocol):
    """Writes that take effect only if the key is in the state the writer saw: what a lease is made of.

    `etag` names one version of an object (S3's ETag); a backend with another version tag uses its own.
    """

    @property
    def root(self) -> str: ...

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """Create the key; None, with nothing replaced, when it exists already."""
        ...

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> ObjectInfo | None:
        """Replace the object only if it is still the version `etag` names; None when it is not (or gone)."""
        ...

    def read_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and the tag of exactly that version; None when there is no such object."""
        ...

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete the object only if it is still the version `etag` names; otherwise leave it."""
        ...


class Storage(Protocol):
    """Keys are '/'-separated and relative to the backend's root; backends refuse unsafe ones."""

    @property
    def root(self) -> str:
        """Full path or URL of the root, as written into NeMo's `clip_location`."""
        ...

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        """Write atomically: readers see the old object or the complete new one, never a part.

        `sha256` is the hex digest of `data` when the caller has computed it already (the writer
        hashes every artifact once); backends that verify it in transit or keep it with the object
        use it instead of hashing again. Returns the stored object's info.
        """
        ...

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """`put`, unless the key exists already: then nothing is replaced and the answer is None."""
        ...

    def read(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """A seekable binary reader, for streaming large inputs (Parquet) without loading them."""
        ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        """`stat` of each key, in order. The backend knows its latency: a local stat costs microseconds,
        less than handing it to a thread, while an S3 HEAD waits on a round trip, so those overlap."""
        ...

    def delete(self, key: str) -> None:
        """Remove a key; a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object below `prefix`, in no particular order."""
        ...

    def remove_abandoned(self, older_than_s: float) -> int:
        """Remove what writers killed mid-write left behind (temp files, unfinished uploads); returns how many.

        Only leftovers older than `older_than_s` go, so writes of concurrent runs are never touched.
        """
        ...

    def object_store_options(self) -> dict[str, str]:
        """How Lance (the `object_store` crate under it) reaches this root, exactly as this client does:
        endpoint, region, addressing and credentials in that crate's option names. The values may hold
        secrets: pass them on, never log them."""
        ...

    def lock(self, key: str, timeout_s: float) -> AbstractContextManager[Lease]:
        """Hold `key` exclusively across processes and machines sharing this storage.

        Waits up to `timeout_s` for another holder, then raises StorageError naming the key. A holder
        that dies releases it (a local lock with its process, an S3 lease when it expires).
        """
        ...


def read_if_exists(storage: Storage, key: str) -> bytes | None:
    """The object's bytes, or None when there is none: one read, no stat first (one request on S3)."""
    try:
        return storage.read(key)
    except StorageError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def holds(storage: Storage, key: str, data: bytes, info: ObjectInfo | None) -> bool:
    """Whether the stored object (`info`, its stat) already holds `data`: by its recorded sha256 when the
    backend keeps one (the clouds), else by reading it back (local files, where a read costs microseconds)."""
    if info is None or info.size != len(data):
        return False
    if info.sha256 is not None:
        return info.sha256 == hashlib.sha256(data).hexdigest()
    return read_if_exists(storage, key) == data


def put_if_changed(storage: Storage, key: str, data: bytes) -> bool:
    """`put` unless the object holds `data` already; whether it wrote. A re-run that derives the same bytes
    then writes nothing: no request on a cloud store, no new modification time on disk."""
    if holds(storage, key, data, storage.stat(key)):
        return False
    storage.put(key, data, sha256=hashlib.sha256(data).hexdigest())
    return True
