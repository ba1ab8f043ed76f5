"""Writing one family's artifacts of one partition: hash, skip identical, write, remove stale, record.

`ArtifactWriter` holds what a run's writes share (the storage, the bounded pool, the one sweep of
leftovers); `FamilyWrite` is one family's artifacts of one partition in flight. The engine's write
path (`clip_assets.engine.partition`) feeds several `FamilyWrite`s from one pass over the input;
`ArtifactWriter.write` is the same sequence for one family on its own.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from clip_assets import layout
from clip_assets.engine.manifest import ManifestEntry, PartitionManifest, load_manifest, read_manifest
from clip_assets.families import Artifact
from clip_assets.storage import Lease, ObjectInfo, Storage
from clip_assets.storage.keys import check_key
from clip_assets.thread_pools import shared_pool

# A temp file this old belongs to a writer that was killed, not to a concurrent run still writing.
ABANDONED_AFTER_S = 6 * 3600
# How long a writer waits for another run writing the same partition.
LOCK_TIMEOUT_S = 3600.0


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
    """What every write of a run shares: storage, the pool (`max_workers`), and one sweep of leftovers.

    Each family write keeps at most `2 * max_workers` artifacts in flight, so memory stays bounded.
    `verify_unchanged` (WriterSettings.verify_unchanged_outputs) stats the recorded objects of an
    unchanged partition before skipping it; without it the manifest alone decides.
    """

    def __init__(
        self,
        storage: Storage,
        max_workers: int = 6,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        verify_unchanged: bool = True,
    ) -> None:
        self.storage = storage
        self.max_workers = max_workers
        self.lock_timeout_s = lock_timeout_s
        self.verify_unchanged = verify_unchanged
        self._swept = False

    def load_manifest(self, family: str, partition_key: str) -> PartitionManifest | None:
        return load_manifest(self.storage, family, partition_key)

    def load_manifests(self, families: Iterable[str], partition_key: str) -> dict[str, PartitionManifest | None]:
        """Several families' manifests of one partition, read at once: on S3 one round trip, not one each.

        Run from a partition's own thread, never from a task of the pool (a task must not wait on another).
        """
        names = list(families)
        if len(names) <= 1:
            return {name: self.load_manifest(name, partition_key) for name in names}
        pool = shared_pool(self.max_workers)
        futures = [pool.submit(self.load_manifest, name, partition_key) for name in names]
        return {name: future.result() for name, future in zip(names, futures, strict=True)}

    def unchanged(self, previous: PartitionManifest | None, output_version: str) -> WriteResult | None:
        """The result of a write that need not happen: the `previous` manifest records this `output_version`
        and every object it records is untouched (one stat each; HEADs on S3; skipped without
        `verify_unchanged`), so nothing needs reading or writing."""
        if previous is None or not output_version or previous.output_version != output_version:
            return None
        if self.verify_unchanged and not self._intact(previous):
            return None
        manifest_key = layout.manifest_key(previous.family, previous.partition_key)
        return WriteResult(previous, manifest_key, skipped=len(previous.entries), unchanged_input=True)

    def sweep_abandoned(self) -> None:
        """Remove what killed writers left behind, once per writer (a run): on S3 it is a listing request."""
        if not self._swept:
            self._swept = True
            self.storage.remove_abandoned(ABANDONED_AFTER_S)

    def begin(
        self, previous: PartitionManifest | None, family: str, partition_key: str, source: str, output_version: str
    ) -> FamilyWrite:
        """Start replacing one family's outputs of a partition, recorded in `previous` (read under the
        partition's lock, which the caller holds)."""
        return FamilyWrite(
            self, previous, PartitionManifest(family, partition_key, source, output_version=output_version)
        )

    def write(
        self,
        family: str,
        partition_key: str,
        source: str,
        artifacts: Iterable[Artifact],
        output_version: str = "",
    ) -> WriteResult:
        """One family of one partition, under the partition's lock so concurrent runs cannot interleave.

        With an `output_version` (clip_assets.engine.output_version) equal to the one recorded, and every
        recorded object untouched, nothing is read or written: `artifacts` is never iterated, so a lazy
        stream never even opens its input.
        """
        self.sweep_abandoned()
        # Checked before locking too, so an up-to-date partition costs no write at all (not even a lock's).
        done = self.unchanged(self.load_manifest(family, partition_key), output_version)
        if done is not None:
            return done
        with self.storage.lock(layout.lock_key(partition_key), self.lock_timeout_s) as lease:
            previous = self.load_manifest(family, partition_key)
            done = self.unchanged(previous, output_version)  # another run just wrote it
            if done is not None:
                return done
            write = self.begin(previous, family, partition_key, source, output_version)
            try:
                for artifact in artifacts:
                    write.add(artifact)
            except BaseException as failure:
                write.abandon(failure)
                raise
            return write.finish(lease)

    def _intact(self, manifest: PartitionManifest) -> bool:
        """Every recorded object still exists as it was written."""
        entries = list(manifest.entries.items())
        current = self.storage.stat_many([key for key, _ in entries])
        return all(
            info is not None and info.size == entry.size and entry.fingerprint in (None, info.fingerprint)
            for (_, entry), info in zip(entries, current, strict=True)
        )

    def other_owners(self, family: str, partition_key: str) -> dict[str, tuple[str, str]]:
        """Keys other partitions' manifests of this family own: key -> (partition, sha256).

        One read per other partition, so it is only asked for when something is stale or a new key
        turns out to exist already (never on an ordinary first write or re-run).
        """
        own = layout.manifest_key(family, partition_key)
        owners: dict[str, tuple[str, str]] = {}
        for info in self.storage.list(layout.manifest_prefix(family)):
            manifest = read_manifest(self.storage, info.key) if info.key != own and info.key.endswith(".json") else None
            if manifest is not None:
                for key, entry in manifest.entries.items():
                    owners[key] = (manifest.partition_key, entry.sha256)
        return owners


class FamilyWrite:
    """One family's artifacts of one partition, written as they are added; `finish` removes the stale and records.

    A key the previous manifest does not know is written only if absent; if something is there and
    another partition's manifest owns it with other bytes, the write is refused (OutputConflictError).
    If the write fails part-way, `abandon` records the previous manifest plus the new versions already
    written, so no file it wrote is ever orphaned.
    """

    def __init__(self, writer: ArtifactWriter, previous: PartitionManifest | None, manifest: PartitionManifest) -> None:
        self.writer = writer
        self.storage = writer.storage
        self.previous = previous
        self.old_entries = previous.entries if previous else {}
        self.result = WriteResult(manifest, layout.manifest_key(manifest.family, manifest.partition_key))
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(2 * writer.max_workers)
        self._futures: list[Future[None]] = []
        self._seen: set[str] = set()
        self._owners: dict[str, tuple[str, str]] | None = None

    def add(self, artifact: Artifact) -> None:
        """Hand one artifact to the pool; raises what an earlier write of this family raised."""
        check_key(artifact.key)
        if artifact.key in self._seen:
            raise DuplicateArtifactError(
                f"two artifacts of partition {self.result.manifest.partition_key!r} map to {artifact.key}"
            )
        self._seen.add(artifact.key)
        self._slots.acquire()
        self._futures.append(shared_pool(self.writer.max_workers).submit(self._store, artifact))
        if len(self._futures) >= 256:
            self._futures = _drain_done(self._futures)

    def finish(self, lease: Lease) -> WriteResult:
        """Wait for every write, remove what the partition no longer produces, record the manifest last."""
        try:
            self._wait()
            self._remove_stale()
        except BaseException as failure:
            self.abandon(failure)
            raise
        document = self.result.manifest.to_bytes()
        if self.previous is None or self.previous.to_bytes() != document:  # a re-run with nothing new writes nothing
            lease.check()
            self.storage.put(self.result.manifest_key, document)
        return self.result

    def abandon(self, failure: BaseException) -> None:
        """After a failure: what was handed over is still written (at most 2 * max_workers artifacts) and,
        if anything was, recorded with the previous files, so the manifest says exactly what is stored."""
        wait(self._futures)
        if not self.result.written:
            return
        manifest = self.result.manifest
        partial = PartitionManifest(
            manifest.family, manifest.partition_key, manifest.source, {**self.old_entries, **manifest.entries}
        )
        try:
            self.storage.put(self.result.manifest_key, partial.to_bytes())
        except Exception as secondary:  # the write's own failure is what the caller must see
            failure.add_note(f"the partial manifest could not be recorded either: {secondary}")

    def _wait(self) -> None:
        wait(self._futures)
        for future in self._futures:
            future.result()

    def _store(self, artifact: Artifact) -> None:
        try:
            digest = hashlib.sha256(artifact.data).hexdigest()
            current, skipped = self._write_unless_identical(artifact, digest, self.old_entries.get(artifact.key))
            entry = ManifestEntry(digest, len(artifact.data), current.fingerprint)
            with self._lock:
                self.result.manifest.entries[artifact.key] = entry
                if skipped:
                    self.result.skipped += 1
                else:
                    self.result.written += 1
                    self.result.bytes_written += entry.size
        finally:
            self._slots.release()

    def _remove_stale(self) -> None:
        stale = sorted(set(self.old_entries) - set(self.result.manifest.entries))
        if not stale:
            return
        shared = self._other_owners()
        for key in stale:
            if key in shared:
                self.result.kept_shared.append(key)
            else:
                self.storage.delete(key)
                self.result.removed.append(key)

    def _other_owners(self) -> dict[str, tuple[str, str]]:
        """`ArtifactWriter.other_owners`, loaded at most once per write, from whichever thread asks first."""
        with self._lock:
            if self._owners is None:
                manifest = self.result.manifest
                self._owners = self.writer.other_owners(manifest.family, manifest.partition_key)
            return self._owners

    def _write_unless_identical(
        self, artifact: Artifact, sha256: str, previous: ManifestEntry | None
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
            owner = self._other_owners().get(key)
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


def _drain_done(futures: list[Future[None]]) -> list[Future[None]]:
    """Surface failures early and keep the pending list short on long videos."""
    pending = []
    for future in futures:
        if future.done():
            future.result()
        else:
            pending.append(future)
    return pending
