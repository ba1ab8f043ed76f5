"""What the asset checks verify, against the objects as they are now: read back, hashed, decoded, cross-checked.

Every family: each manifest entry exists with the recorded size and sha256, and the bytes are what
the family promises (`OutputFamily.verify`: MP4s demux, previews decode frame by frame, pickles load
through an unpickler that only admits numpy arrays, Parquet files have NeMo's schema). Then what the
family's files say about the other families' (`OutputFamily.cross_check`). Free of Dagster.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from clip_assets.engine.manifest import PartitionManifest
from clip_assets.families import OutputFamily
from clip_assets.families.base import Damaged, Problem, RecordedOutputs
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage, StorageError
from clip_assets.thread_pools import shared_pool

# Objects verified at once: each is read whole (they are clip-sized), so this bounds memory too.
VERIFY_WORKERS = 4


@dataclass
class Verification:
    """The outcome for one partition of one family."""

    checked: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _read_and_verify(
    storage: Storage, key: str, size: int, sha256: str, verify: Callable[[str, bytes], None]
) -> tuple[int, str | None]:
    try:
        data = storage.read(key)
    except StorageError as exc:
        return 0, "missing" if exc.errno == errno.ENOENT else str(exc)
    if len(data) != size:
        return len(data), f"{len(data)} bytes, the manifest recorded {size}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return len(data), "content differs from the recorded sha256"
    try:
        verify(key, data)
    except Damaged as exc:
        return len(data), str(exc)
    return len(data), None


def verify_entries(storage: Storage, manifest: PartitionManifest, family: OutputFamily) -> Verification:
    """Read every recorded object back: present, same size, same sha256, and sound as the family promises."""
    result = Verification()
    entries = sorted(manifest.entries.items())
    outcomes = shared_pool(VERIFY_WORKERS).map(
        lambda item: _read_and_verify(storage, item[0], item[1].size, item[1].sha256, family.verify), entries
    )
    for (key, _), (read, problem) in zip(entries, outcomes, strict=True):
        result.checked += 1
        result.bytes_read += read
        if problem is not None:
            result.problems.append(Problem(key, problem))
    return result


def verify_cross_references(
    storage: Storage,
    manifest: PartitionManifest,
    family: OutputFamily,
    others: Mapping[str, PartitionManifest | None],
    settings: WriterSettings,
) -> list[Problem]:
    """What one family's files say about the others' (the family's own `cross_check`, if it has one)."""
    if family.cross_check is None:
        return []
    outputs = RecordedOutputs(
        family=family.name,
        keys=frozenset(manifest.entries),
        others={name: None if other is None else frozenset(other.entries) for name, other in others.items()},
        read=storage.read,
        exists=lambda key: storage.stat(key) is not None,
        root=storage.root,
        settings=settings,
    )
    return family.cross_check(outputs)
