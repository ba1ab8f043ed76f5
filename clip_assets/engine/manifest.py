"""The per-partition, per-family manifest: which keys a partition owns and the sha256 of each.

It is what makes writes idempotent (identical content is not rewritten) and re-runs clean (keys a
partition no longer produces are removed). The writer records it last; checks, claims, the dataset
summary and the derived tables read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from clip_assets import layout
from clip_assets.storage import Storage, read_if_exists

MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A manifest that cannot be read: the writer will not guess what a partition owns."""


@dataclass(frozen=True)
class ManifestEntry:
    sha256: str
    size: int
    # The stored object's fingerprint right after it was written (size + mtime locally, size + ETag on
    # S3): a later stat that differs means someone touched the object, so it is rewritten.
    fingerprint: str | None = None


@dataclass
class PartitionManifest:
    family: str
    partition_key: str
    source: str = ""
    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    # What the outputs were built from (clip_assets.output_version): equal means a re-run would write
    # the same bytes. Empty when unknown (a partial manifest after a failure).
    output_version: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())

    @property
    def digest(self) -> str:
        """One sha256 over every (key, sha256) pair: equal digests mean identical output."""
        hasher = hashlib.sha256()
        for key in sorted(self.entries):
            hasher.update(f"{key}\0{self.entries[key].sha256}\n".encode())
        return hasher.hexdigest()

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "family": self.family,
                "partition_key": self.partition_key,
                "source": self.source,
                "output_version": self.output_version,
                "digest": self.digest,
                "artifacts": {key: _entry_json(e) for key, e in sorted(self.entries.items())},
            },
            indent=1,
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionManifest:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {doc.get('format')!r}")
        return cls(
            family=doc["family"],
            partition_key=doc["partition_key"],
            source=doc.get("source", ""),
            output_version=doc.get("output_version", ""),
            entries={
                k: ManifestEntry(v["sha256"], int(v["size"]), v.get("fingerprint")) for k, v in doc["artifacts"].items()
            },
        )


def _entry_json(entry: ManifestEntry) -> dict[str, str | int]:
    doc: dict[str, str | int] = {"sha256": entry.sha256, "size": entry.size}
    if entry.fingerprint is not None:
        doc["fingerprint"] = entry.fingerprint
    return doc


def read_manifest(storage: Storage, key: str) -> PartitionManifest | None:
    """The manifest stored at `key`, or None where there is none."""
    data = read_if_exists(storage, key)
    if data is None:
        return None
    try:
        return PartitionManifest.from_bytes(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"{storage.root}/{key}: unreadable manifest ({exc}); remove it and re-materialize to rebuild"
        ) from exc


def load_manifest(storage: Storage, family: str, partition_key: str) -> PartitionManifest | None:
    """One family's manifest of one partition, or None where it was never materialized."""
    return read_manifest(storage, layout.manifest_key(family, partition_key))
