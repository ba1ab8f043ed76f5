"""Dataset-wide figures a curator asks for, rolled up from per-chunk stats and manifests. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DatasetStats:
    videos: int = 0
    clips_passed: int = 0
    clips_filtered: int = 0
    clip_seconds: float = 0.0
    clips_with_caption: int = 0
    clips_with_embeddings: int = 0
    clips_with_webp: int = 0
    bytes_by_family: Counter[str] = field(default_factory=Counter)
    files_by_family: Counter[str] = field(default_factory=Counter)
    clips_by_video: dict[str, int] = field(default_factory=dict)

    def add_video(self, partition_key: str, chunk_documents: list[dict[str, Any]]) -> None:
        """One video's `processed_clip_chunks` documents (NeMo's counters)."""
        self.videos += 1
        passed = 0
        for doc in chunk_documents:
            passed += int(doc["num_clips_passed"])
            self.clips_filtered += len(doc["filtered_clips"])
            self.clip_seconds += float(doc["total_clip_duration"])
            self.clips_with_caption += int(doc["num_clips_with_caption"])
            self.clips_with_embeddings += int(doc["num_clips_with_embeddings"])
            self.clips_with_webp += int(doc["num_clips_with_webp"])
        self.clips_passed += passed
        self.clips_by_video[partition_key] = passed

    def add_family(self, family: str, files: int, size: int) -> None:
        self.files_by_family[family] += files
        self.bytes_by_family[family] += size

    def coverage(self, count: int) -> float:
        return count / self.clips_passed if self.clips_passed else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "clips_passed": self.clips_passed,
            "clips_filtered": self.clips_filtered,
            "clip_hours": self.clip_seconds / 3600,
            "caption_coverage": self.coverage(self.clips_with_caption),
            "embedding_coverage": self.coverage(self.clips_with_embeddings),
            "preview_coverage": self.coverage(self.clips_with_webp),
            "bytes_by_family": dict(sorted(self.bytes_by_family.items())),
            "files_by_family": dict(sorted(self.files_by_family.items())),
            "clips_by_video": dict(sorted(self.clips_by_video.items())),
        }
