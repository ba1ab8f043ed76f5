"""A partition's intent record: what it holds and what it is about to write, recorded before it writes.

The manifests say what a partition's families wrote once they finished; the intent record covers
the time before that. It names the clip ids the partition holds claims on, so claims of clips the
input no longer has are released once the new version is written, even when the run that took them
was killed before it finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from clip_assets import layout
from clip_assets.storage import Storage

INTENT_FORMAT = 1


class IntentError(ValueError):
    """An intent record that cannot be read: nothing is released or removed on a guess."""


@dataclass(frozen=True)
class PartitionIntent:
    partition_key: str
    # Clip ids the partition holds (or is about to take) claims on.
    clips: frozenset[str] = frozenset()

    def to_bytes(self) -> bytes:
        document = {"format": INTENT_FORMAT, "partition": self.partition_key, "clips": sorted(self.clips)}
        return json.dumps(document, indent=1).encode("utf-8")


def load_intent(storage: Storage, partition_key: str) -> PartitionIntent | None:
    """The partition's intent record, or None when it has none (never written, or written before records)."""
    key = layout.intent_key(partition_key)
    if storage.stat(key) is None:
        return None
    try:
        document = json.loads(storage.read(key))
        if document.get("partition") != partition_key:
            raise ValueError(f"it names partition {document.get('partition')!r}")
        return PartitionIntent(partition_key, frozenset(str(clip) for clip in document["clips"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntentError(f"{storage.root}/{key}: not an intent record of partition {partition_key!r} ({exc})") from exc


def save_intent(storage: Storage, intent: PartitionIntent) -> None:
    storage.put(layout.intent_key(intent.partition_key), intent.to_bytes())
