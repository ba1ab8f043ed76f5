"""Removing one partition's outputs: what a curator does when a video must leave the dataset.

Under the partition's lock, every family's recorded files are deleted (except any key another
partition's manifest also records), then the manifests; then whatever its intent record names that
a killed run left unrecorded, its clip claims, the video's claim, the intent and its failure record,
so the same video and clip ids can be curated again later and nothing of it is left. The derived
tables follow on their next update (`clip_assets.dataset`), which drops the rows of partitions
without outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from clip_assets import layout
from clip_assets.engine.claims import release_clips
from clip_assets.engine.intent import load_intent, remove_unrecorded
from clip_assets.engine.manifest import load_manifest
from clip_assets.engine.writer import LOCK_TIMEOUT_S, ArtifactWriter
from clip_assets.families import OutputFamily, video_summaries
from clip_assets.storage import Storage


@dataclass
class Removal:
    """What a removal deleted: files by family, manifests, claims, a killed run's leftovers; shared keys it kept."""

    partition_key: str
    files: dict[str, int] = field(default_factory=dict)
    manifests: int = 0
    claims: int = 0
    leftovers: int = 0
    kept_shared: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.manifests)


def remove_partition(
    storage: Storage, partition_key: str, families: Sequence[OutputFamily], lock_timeout_s: float = LOCK_TIMEOUT_S
) -> Removal:
    """Delete every output the partition's manifests record, the manifests, and its bookkeeping."""
    removal = Removal(partition_key)
    writer = ArtifactWriter(storage, lock_timeout_s=lock_timeout_s)
    with storage.lock(layout.lock_key(partition_key), lock_timeout_s):
        summary = load_manifest(storage, video_summaries.FAMILY.name, partition_key)
        intent = load_intent(storage, partition_key)
        kept: set[str] = set()
        for family in families:
            manifest = load_manifest(storage, family.name, partition_key)
            if manifest is None:
                continue
            shared = writer.other_owners(family.name, partition_key) if manifest.entries else {}
            deleted = 0
            for key in sorted(manifest.entries):
                if key in shared:
                    removal.kept_shared.append(key)
                    kept.add(key)
                else:
                    storage.delete(key)
                    deleted += 1
            removal.files[family.name] = deleted
            storage.delete(layout.manifest_key(family.name, partition_key))
            removal.manifests += 1
        for key in sorted(summary.entries if summary else ()):
            if key.startswith(layout.VIDEO_METADATA):
                claim = layout.video_claim_key(key.removeprefix(layout.VIDEO_METADATA).removesuffix(".json"))
                info = storage.stat(claim)
                if info is not None and json.loads(storage.read(claim)).get("partition") == partition_key:
                    storage.delete(claim)
                    removal.claims += 1
        if intent is not None:
            removal.leftovers = len(remove_unrecorded(storage, intent, kept))
            release_clips(storage, partition_key, intent.clips)
            storage.delete(layout.intent_key(partition_key))
        storage.delete(layout.video_error_key(partition_key))
    return removal
