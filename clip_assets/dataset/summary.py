"""Dataset-wide figures a curator asks for, rolled up from every partition's manifests and chunk stats.

Each partition's families are read from their manifests (what was written, never the inbox); the
counters come from NeMo's per-chunk JSON that `video_summaries` wrote; the derived tables' figures
from the tables themselves (row counts are Lance metadata, no scan).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.gallery import read_gallery_index
from clip_assets.dataset.near_duplicates_update import read_near_duplicates_summary
from clip_assets.dataset.shards import load_shards_index
from clip_assets.dataset.tables import load_embedding_models, table_location, vector_counts
from clip_assets.engine.failures import PartitionFailure, load_failures
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import OutputFamily, video_summaries
from clip_assets.storage import Storage

# Failure reasons the summary lists, most frequent first.
TOP_FAILURE_REASONS = 5
# Clips left out of the training shards the summary lists by id (all are counted).
LISTED_LEFT_OUT = 20


@dataclass(frozen=True)
class TableFigures:
    """The clip index, the vector table and the last near-duplicate grouping, as a curator counts them."""

    index_rows: int = 0
    index_passed: int = 0
    vectors: int = 0
    # Every embedding model's vectors (the dataset keeps each model's when it moves to another).
    vectors_by_model: dict[str, int] = field(default_factory=dict)
    near_duplicate_groups: int | None = None
    duplicate_rate: float | None = None
    # The training shards' index file (zeros before the first shards were written).
    shards: int = 0
    shard_samples: int = 0
    shard_bytes: int = 0
    # Passed clips the shards left out (MP4 absent, missing or damaged): how many, and the first by id.
    shard_clips_left_out: int = 0
    shard_left_out: list[dict[str, Any]] = field(default_factory=list)
    # The gallery's clips shown without their MP4 or preview (None before the first gallery).
    gallery_clips_without_mp4: int | None = None
    gallery_clips_without_preview: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index_rows": self.index_rows,
            "index_passed": self.index_passed,
            "vectors": self.vectors,
            "vectors_by_model": self.vectors_by_model,
            "near_duplicate_groups": self.near_duplicate_groups,
            "duplicate_rate": self.duplicate_rate,
            "training_shards": self.shards,
            "training_shard_samples": self.shard_samples,
            "training_shard_bytes": self.shard_bytes,
            "training_clips_left_out": self.shard_clips_left_out,
            "training_left_out": self.shard_left_out,
            "gallery_clips_without_mp4": self.gallery_clips_without_mp4,
            "gallery_clips_without_preview": self.gallery_clips_without_preview,
        }


def table_figures(storage: Storage) -> TableFigures:
    """Zeros and Nones for tables not written yet."""
    index = table_location(storage, layout.clip_index_key()).open()
    models = load_embedding_models(storage)
    vectors = vector_counts(storage, models)
    duplicates = read_near_duplicates_summary(storage)
    shards = load_shards_index(storage)
    left_out = shards.left_out if shards is not None else []
    gallery = read_gallery_index(storage)
    return TableFigures(
        index_rows=index.count_rows() if index is not None else 0,
        index_passed=index.count_rows(filter=ci.PASSED) if index is not None else 0,
        vectors=sum(vectors),
        vectors_by_model={str(table.model): count for table, count in zip(models.tables, vectors, strict=True)},
        near_duplicate_groups=int(duplicates["groups"]) if duplicates else None,
        duplicate_rate=float(duplicates["duplicate_rate"]) if duplicates else None,
        shards=len(shards.shards) if shards is not None else 0,
        shard_samples=shards.samples if shards is not None else 0,
        shard_bytes=shards.total_bytes if shards is not None else 0,
        shard_clips_left_out=len(left_out),
        shard_left_out=[
            {"clip_id": c.clip_id, "reason": c.reason, "mp4_key": c.mp4_key} for c in left_out[:LISTED_LEFT_OUT]
        ],
        gallery_clips_without_mp4=gallery.get("clipsWithoutMp4") if gallery else None,
        gallery_clips_without_preview=gallery.get("clipsWithoutPreview") if gallery else None,
    )


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
    tables: TableFigures = field(default_factory=TableFigures)
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
            "dataset_tables": self.tables.to_json(),
            "failed_partitions": self.failed_partitions,
            "top_failure_reasons": dict(self.failure_reasons.most_common(TOP_FAILURE_REASONS)),
        }


def summarize(
    storage: Storage, families: Sequence[OutputFamily], partition_keys: Iterable[str]
) -> tuple[DatasetStats, int]:
    """The roll-up of every partition in `partition_keys`, and how many of them have no outputs yet."""
    stats = DatasetStats()
    missing = 0
    keys = sorted(partition_keys)
    for key in keys:
        summary = load_manifest(storage, video_summaries.FAMILY.name, key)
        if summary is None:
            missing += 1
            continue
        chunk_keys = sorted(k for k in summary.entries if k.startswith(layout.CHUNK_STATS))
        stats.add_video(key, [json.loads(storage.read(k)) for k in chunk_keys])
        for family in families:
            manifest = summary if family is video_summaries.FAMILY else load_manifest(storage, family.name, key)
            if manifest is not None:
                stats.add_family(family.name, len(manifest.entries), manifest.total_bytes)
    stats.tables = table_figures(storage)
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
    if stats.tables.shard_bytes:
        sizes["training shards"] = stats.tables.shard_bytes
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
