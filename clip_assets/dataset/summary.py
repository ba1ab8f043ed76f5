"""Dataset-wide figures a curator asks for, rolled up from every partition's manifests and chunk stats.

Each partition's families are read through their views (what was written, never the inbox); the
counters come from NeMo's per-chunk JSON that `video_summaries` wrote; the derived products give their
own figures (`DerivedProduct.figures`: row counts from Lance metadata, the shards' and gallery's index
files).
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clip_assets import layout
from clip_assets.dataset.family_outputs import FamilyPartition
from clip_assets.engine.failures import PartitionFailure, load_failures
from clip_assets.families import video_summaries
from clip_assets.metadata import MetadataEntry
from clip_assets.storage import Storage

# Failure reasons the summary lists, most frequent first.
TOP_FAILURE_REASONS = 5


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
    # The derived products' figures (each product's `figures`): index rows, vectors, shards, gallery, ...
    tables: dict[str, MetadataEntry] = field(default_factory=dict)
    # From the failure records (clip_assets.engine.failures): partitions whose last run failed, and why.
    failed_partitions: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)

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

    def add_failure(self, failure: PartitionFailure) -> None:
        """A failed partition, counted once per reason (one bad input fails every family with one error)."""
        self.failed_partitions += 1
        self.failure_reasons.update({detail.reason for detail in failure.errors})

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
            "dataset_tables": dict(self.tables),
            "failed_partitions": self.failed_partitions,
            "top_failure_reasons": dict(self.failure_reasons.most_common(TOP_FAILURE_REASONS)),
        }


def summarize(
    storage: Storage,
    views: Mapping[str, Mapping[str, FamilyPartition]],
    partition_keys: Iterable[str],
    tables: Mapping[str, MetadataEntry],
) -> tuple[DatasetStats, int]:
    """The roll-up of every partition in `partition_keys` from the families' views of them (by family, then
    partition), the derived products' figures `tables`, and how many partitions have no outputs yet."""
    stats = DatasetStats(tables=dict(tables))
    missing = 0
    keys = sorted(partition_keys)
    for key in keys:
        summary = views[video_summaries.FAMILY.name][key]
        if not summary.written:
            missing += 1
            continue
        stats.add_video(key, [document for _, document in summary.documents(layout.CHUNK_STATS)])
        for family, by_partition in views.items():
            manifest = by_partition[key].manifest
            if manifest is not None:
                stats.add_family(family, len(manifest.entries), manifest.total_bytes)
    registered = set(keys)
    for failure in load_failures(storage):  # records of partitions no longer registered are not counted
        if failure.partition_key in registered:
            stats.add_failure(failure)
    return stats, missing


# Up to this many videos the plot has a bar per video; beyond, a histogram of videos by passed clips.
MAX_VIDEO_BARS = 60
HISTOGRAM_BINS = 30


def videos_chart(clips_by_video: dict[str, int]) -> tuple[str, list[float], list[int]]:
    """What the plot's right half draws: a bar per video (most clips first) while they fit, else the number
    of videos per range of passed clips, so thousands of videos stay readable. (kind, x, heights)"""
    counts = sorted(clips_by_video.values(), reverse=True)
    if len(counts) <= MAX_VIDEO_BARS:
        return "per_video", [float(i) for i in range(len(counts))], counts
    low, high = min(counts), max(counts)
    width = max(1.0, (high - low + 1) / HISTOGRAM_BINS)
    bins = [0] * min(HISTOGRAM_BINS, math.ceil((high - low + 1) / width))
    for count in counts:
        bins[min(len(bins) - 1, int((count - low) / width))] += 1
    return "histogram", [low + i * width for i in range(len(bins))], bins


def plot_png(stats: DatasetStats) -> bytes:
    """Bytes per family (and of the training shards) and passed clips per video, as a PNG for the UI."""
    # Imported here: matplotlib costs a noticeable import time, and only the summary draws.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (by_family, by_video) = plt.subplots(1, 2, figsize=(10, 3.6))
    sizes = dict(stats.bytes_by_family)
    shard_bytes = stats.tables.get("training_shard_bytes")
    if isinstance(shard_bytes, int) and shard_bytes:
        sizes["training shards"] = shard_bytes
    names = sorted(sizes)
    by_family.barh(names, [sizes[name] / 1e6 for name in names], color="#4f46e5")
    by_family.set_xlabel("MB written")
    by_family.set_title("Bytes per output")
    kind, x, heights = videos_chart(stats.clips_by_video)
    if kind == "per_video":
        by_video.bar(x, heights, color="#0d9488")
        by_video.set_xlabel("videos, most clips first")
        by_video.set_ylabel("passed clips")
    else:
        width = x[1] - x[0] if len(x) > 1 else 1.0
        by_video.bar(x, heights, width=width, align="edge", color="#0d9488", edgecolor="white", linewidth=0.5)
        by_video.set_xlabel("passed clips per video")
        by_video.set_ylabel("videos")
    by_video.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_video.set_title(f"{stats.clips_passed} passed clips in {stats.videos} videos")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
