"""A partition's intent record: what it holds and what it is about to write, recorded before it writes.

The manifests say what a partition's families wrote once they finished; the intent record covers
the time before that. It names the clip ids the partition holds claims on, and every key its families
may write in the run under way (`OutputFamily.planned_keys`), recorded before the first write. A run
killed mid-write leaves files no manifest records; the record still names them, so the partition's
next successful run removes whichever of them no manifest records then, whatever its input has
become, and claims of clips the input no longer has are released.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from clip_assets import layout
from clip_assets.families import OutputFamily
from clip_assets.families.base import VideoContext
from clip_assets.storage import Storage, read_if_exists
from clip_assets.storage.keys import check_key

INTENT_FORMAT = 1


class IntentError(ValueError):
    """An intent record that cannot be read: nothing is released or removed on a guess."""


@dataclass(frozen=True)
class PartitionIntent:
    partition_key: str
    # Clip ids the partition holds (or is about to take) claims on.
    clips: frozenset[str] = frozenset()
    # Keys a run may have written that no manifest records yet: empty once a run finished them all.
    keys: frozenset[str] = frozenset()

    def to_bytes(self) -> bytes:
        document = {
            "format": INTENT_FORMAT,
            "partition": self.partition_key,
            "clips": sorted(self.clips),
            "keys": sorted(self.keys),
        }
        return json.dumps(document, indent=1).encode("utf-8")


def load_intent(storage: Storage, partition_key: str) -> PartitionIntent | None:
    """The partition's intent record, or None when it has none (never written, or written before records)."""
    key = layout.intent_key(partition_key)
    data = read_if_exists(storage, key)
    if data is None:
        return None
    try:
        document = json.loads(data)
        if document.get("partition") != partition_key:
            raise ValueError(f"it names partition {document.get('partition')!r}")
        clips = frozenset(str(clip) for clip in document["clips"])
        return PartitionIntent(partition_key, clips, frozenset(str(key) for key in document.get("keys", ())))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntentError(f"{storage.root}/{key}: not an intent record of partition {partition_key!r} ({exc})") from exc


def save_intent(storage: Storage, intent: PartitionIntent) -> None:
    storage.put(layout.intent_key(intent.partition_key), intent.to_bytes())


def planned_keys(families: Iterable[OutputFamily], video: VideoContext) -> frozenset[str]:
    """Every key the families may write for the video, before any is written (checked as keys are)."""
    keys: set[str] = set()
    for family in families:
        if family.planned_keys is not None:
            keys.update(check_key(key) for key in family.planned_keys(video))
    return frozenset(keys)


def remove_unrecorded(storage: Storage, intent: PartitionIntent, recorded: Iterable[str]) -> list[str]:
    """Delete the keys the intent names that exist but no manifest of the partition records: what a killed
    run wrote for an input that has changed since. Called under the partition's lock, after a run wrote
    every family, so nothing of a run in progress is touched; the keys are the partition's own (its clip
    ids are claimed, its video too). Returns the keys removed.

    A key that was never written may still have its folder: a run killed between making a clip's
    `previews/<uuid>/` and publishing into it leaves it empty on local disk. Deleting the key (nothing, where
    it is missing) removes the folders it would have emptied; on an object store there are none, and this
    path runs only after a killed run."""
    candidates = sorted(intent.keys - set(recorded))
    found = storage.stat_many(candidates)
    removed = [key for key, info in zip(candidates, found, strict=True) if info is not None]
    for key, info in zip(candidates, found, strict=True):
        if info is not None or layout.folders_emptied_by(key):
            storage.delete(key)
    return removed
