"""Writes one family's artifacts for one partition: hash, skip identical, write, remove stale, record.

Free of Dagster so it can be driven directly by tests and benchmarks; the IO manager wraps it.
"""

from __future__ import annotations

import errno
import hashlib
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from clip_assets import layout
from clip_assets.artifacts import Artifact
from clip_assets.manifest import ManifestEntry, PartitionManifest
from clip_assets.storage import ObjectInfo, Storage, StorageError
from clip_assets.thread_pools import shared_pool

# A temp file this old belongs to a writer that was killed, not to a concurrent run still writing.
ABANDONED_AFTER_S = 6 * 3600
# How long a writer waits for another run writing the same partition of the same family.
LOCK_TIMEOUT_S = 3600.0
# Leftovers only become removable hours after their writer died, so one sweep per storage root per
# process every few minutes is plenty (on S3 a sweep is a listing request).
SWEEP_INTERVAL_S = 600
_last_sweep: dict[str, float] = {}


class ManifestError(ValueError):
    """A manifest that cannot be read: the writer will not guess what a partition owns."""


class OutputConflictError(ValueError):
    """Two partitions' inputs map to one output path with different content; the second one is refused."""


class DuplicateArtifactError(ValueError):
    """Two artifacts of one partition mapped to one key: one would silently overwrite the other."""


@dataclass
class WriteResult:
    manifest: PartitionManifest
    manifest_key: str
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    removed: list[str] = field(default_factory=list)
    kept_shared: list[str] = field(default_factory=list)
    # The input, settings and code were those of the last write and its objects were intact:
    # nothing was read or written.
    unchanged_input: bool = False


class ArtifactWriter:
    """Consumes artifacts lazily with at most `2 * max_workers` in flight, so memory stays bounded."""

    def __init__(self, storage: Storage, max_workers: int = 6, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.storage = storage
        self.max_workers = max_workers
        self.lock_timeout_s = lock_timeout_s

    def load_manifest(self, family: str, partition_key: str) -> PartitionManifest | None:
        return self._read_manifest(layout.manifest_key(family, partition_key))

    def _read_manifest(self, key: str) -> PartitionManifest | None:
        try:
            data = self.storage.read(key)
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        try:
            return PartitionManifest.from_bytes(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(
                f"{self.storage.root}/{key}: unreadable manifest ({exc}); remove it and re-materialize to rebuild"
            ) from exc

    def write(
        self,
        family: str,
        partition_key: str,
        source: str,
        artifacts: Iterable[Artifact],
        output_version: str = "",
    ) -> WriteResult:
        """Write one partition of one family, holding its lock so concurrent runs cannot interleave.

        With an `output_version` (clip_assets.output_version) equal to the one recorded, and every
        recorded object untouched, nothing is read or written: `artifacts` is never iterated, so a
        lazy stream never even opens its input.
        """
        self._sweep_abandoned()
        manifest_key = layout.manifest_key(family, partition_key)
        # Checked before locking too, so an up-to-date partition costs no write at all (not even a lock's).
        previous = self.load_manifest(family, partition_key)
        if self._up_to_date(previous, output_version):
            assert previous is not None
            return WriteResult(previous, manifest_key, skipped=len(previous.entries), unchanged_input=True)
        with self.storage.lock(layout.lock_key(family, partition_key), self.lock_timeout_s) as lease:
            previous = self.load_manifest(family, partition_key)
            if self._up_to_date(previous, output_version):  # another run just wrote it
                assert previous is not None
                return WriteResult(previous, manifest_key, skipped=len(previous.entries), unchanged_input=True)
            manifest = PartitionManifest(family, partition_key, source, output_version=output_version)
            result = WriteResult(manifest, manifest_key)
            old_entries = previous.entries if previous else {}
            self._write_artifacts(result, artifacts, old_entries)
            self._remove_stale(result, old_entries)
            document = manifest.to_bytes()
            if previous is None or previous.to_bytes() != document:  # a re-run with nothing new writes nothing
                lease.check()
                self.storage.put(manifest_key, document)
        return result

    def _up_to_date(self, previous: PartitionManifest | None, output_version: str) -> bool:
        return (
            previous is not None
            and bool(output_version)
            and previous.output_version == output_version
            and self._intact(previous)
        )

    def _write_artifacts(
        self, result: WriteResult, artifacts: Iterable[Artifact], old_entries: dict[str, ManifestEntry]
    ) -> None:
        manifest = result.manifest
        lock = threading.Lock()
        slots = threading.BoundedSemaphore(2 * self.max_workers)
        owners = _LazyOwners(self, manifest.family, manifest.partition_key)

        def store(artifact: Artifact) -> None:
            try:
                digest = hashlib.sha256(artifact.data).hexdigest()
                previous = old_entries.get(artifact.key)
                current, skipped = self._write_unless_identical(artifact, digest, previous, owners)
                entry = ManifestEntry(digest, len(artifact.data), current.fingerprint)
                with lock:
                    manifest.entries[artifact.key] = entry
                    if skipped:
                        result.skipped += 1
                    else:
                        result.written += 1
                        result.bytes_written += entry.size
            finally:
                slots.release()

        futures: list[Future[None]] = []
        seen: set[str] = set()
        pool = shared_pool(self.max_workers)
        try:
            try:
                for artifact in artifacts:
                    layout.check_key(artifact.key)
                    if artifact.key in seen:
                        raise DuplicateArtifactError(
                            f"two artifacts of partition {manifest.partition_key!r} map to {artifact.key}"
                        )
                    seen.add(artifact.key)
                    slots.acquire()
                    futures.append(pool.submit(store, artifact))
                    if len(futures) >= 256:
                        futures = _drain_done(futures)
            finally:
                # What was handed over before a failure is still written (at most 2 * max_workers
                # artifacts) and recorded, so the partial manifest says exactly what is on storage.
                wait(futures)
            for future in futures:
                future.result()
        except BaseException as exc:
            if result.written:
                self._record_partial_write(result.manifest_key, old_entries, manifest, exc)
            raise

    def _remove_stale(self, result: WriteResult, old_entries: dict[str, ManifestEntry]) -> None:
        stale = sorted(set(old_entries) - set(result.manifest.entries))
        if not stale:
            return
        shared = self._other_owners(result.manifest.family, result.manifest.partition_key)
        for key in stale:
            if key in shared:
                result.kept_shared.append(key)
            else:
                self.storage.delete(key)
                result.removed.append(key)

    def _intact(self, manifest: PartitionManifest) -> bool:
        """Every recorded object still exists as it was written (one stat each; HEADs on S3)."""
        entries = list(manifest.entries.items())
        current = self.storage.stat_many([key for key, _ in entries])
        return all(
            info is not None and info.size == entry.size and entry.fingerprint in (None, info.fingerprint)
            for (_, entry), info in zip(entries, current, strict=True)
        )

    def _sweep_abandoned(self) -> None:
        now = time.monotonic()
        if now - _last_sweep.get(self.storage.root, float("-inf")) >= SWEEP_INTERVAL_S:
            _last_sweep[self.storage.root] = now
            self.storage.remove_abandoned(ABANDONED_AFTER_S)

    def _record_partial_write(
        self,
        manifest_key: str,
        old_entries: dict[str, ManifestEntry],
        written: PartitionManifest,
        failure: BaseException,
    ) -> None:
        """After a failed write, own what it already replaced, so no file it wrote is ever orphaned.

        The previous manifest plus the new versions written: the next successful run compares against
        the files as they are and removes whatever it no longer produces.
        """
        partial = PartitionManifest(
            written.family, written.partition_key, written.source, {**old_entries, **written.entries}
        )
        try:
            self.storage.put(manifest_key, partial.to_bytes())
        except Exception as secondary:  # the write's own failure is what the caller must see
            failure.add_note(f"the partial manifest could not be recorded either: {secondary}")

    def _write_unless_identical(
        self, artifact: Artifact, sha256: str, previous: ManifestEntry | None, owners: _LazyOwners
    ) -> tuple[ObjectInfo, bool]:
        """Write the artifact unless the stored object provably holds these bytes; (object, skipped).

        Proof is the previous manifest (same hash, and the object untouched since: same fingerprint)
        or the hash the backend keeps with the object (S3 metadata), which also covers a manifest lost
        to a killed run. A key the manifest does not know is written conditionally, so the common case
        (a new key) costs one request, not a look and then a write; when it exists already and another
        partition owns it with other bytes, two inputs map to one output path, and that is an error,
        never an overwrite of the other partition's file.
        """
        key, data = artifact.key, artifact.data
        if previous is None:
            created = self.storage.put_if_absent(key, data, sha256)
            if created is not None:
                return created, False
            owner = owners.get().get(key)
            if owner is not None and owner[1] != sha256:
                raise OutputConflictError(
                    f"{self.storage.root}/{key} already holds other content for partition {owner[0]!r}: "
                    "two inputs map to this output path"
                )
            if owner is not None:  # the same bytes for two partitions: shared, as stale removal knows
                current = self.storage.stat(key)
                if current is not None and current.size == len(data):
                    return current, True
        if previous is None or previous.sha256 == sha256:
            current = self.storage.stat(key)
            if current is not None and current.size == len(data):
                if current.sha256 is not None:
                    if current.sha256 == sha256:
                        return current, True
                elif previous is not None and previous.fingerprint in (None, current.fingerprint):
                    return current, True
        return self.storage.put(key, data, sha256), False

    def _other_owners(self, family: str, partition_key: str) -> dict[str, tuple[str, str]]:
        """Keys other partitions' manifests of this family own: key -> (partition, sha256).

        One read per other partition, so it is only asked for when something is stale or a new key
        turns out to exist already (never on an ordinary first write or re-run).
        """
        own = layout.manifest_key(family, partition_key)
        owners: dict[str, tuple[str, str]] = {}
        for info in self.storage.list(layout.manifest_prefix(family)):
            manifest = self._read_manifest(info.key) if info.key != own and info.key.endswith(".json") else None
            if manifest is not None:
                for key, entry in manifest.entries.items():
                    owners[key] = (manifest.partition_key, entry.sha256)
        return owners


class _LazyOwners:
    """`ArtifactWriter._other_owners`, loaded at most once per write, from whichever thread asks first."""

    def __init__(self, writer: ArtifactWriter, family: str, partition_key: str) -> None:
        self._writer = writer
        self._family = family
        self._partition_key = partition_key
        self._owners: dict[str, tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            if self._owners is None:
                self._owners = self._writer._other_owners(self._family, self._partition_key)
            return self._owners


def _drain_done(futures: list[Future[None]]) -> list[Future[None]]:
    """Surface failures early and keep the pending list short on long videos."""
    pending = []
    for future in futures:
        if future.done():
            future.result()
        else:
            pending.append(future)
    return pending
