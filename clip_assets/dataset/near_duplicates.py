"""Near-duplicate clips across the whole dataset: NeMo Curator's semantic dedup, in plain numpy.

The idea is NeMo's (`SemanticDeduplicator`): cluster the normalized embeddings with k-means, then
compare clips exactly, pairwise, within each cluster only, so the work grows with n * cluster size
instead of n². Pairs within `max_cosine_distance` are joined with union-find into groups (so a chain
a~b~c is one group even if a and c are further apart). Small datasets (up to `CLUSTER_SIZE` * 2
clips) are one cluster: every pair is compared. As in NeMo, two clips just either side of a cluster
boundary are not compared; with clusters of thousands of clips that is rare for true duplicates,
which sit close to each other and so to the same centroid.

The keep rule (one clip kept per group): the clip with the longest duration, ties broken by the
smallest clip id. Only passed clips with an embedding take part (the vector table's rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DEFAULT_MAX_COSINE_DISTANCE = 0.02
# Target clips per k-means cluster; the exact pairwise pass compares each clip with its cluster.
CLUSTER_SIZE = 4096
KMEANS_ITERATIONS = 10
# Centroids are trained on a sample this large (assignment then covers every clip).
KMEANS_SAMPLE = 65_536
BLOCK_ROWS = 2048
# A duplicate rate this many points above the previous grouping's is worth a look.
DEFAULT_RATE_JUMP = 0.05

GROUPS_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("kept_clip_id", pa.string(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("cosine_distance_to_kept", pa.float32(), nullable=False),
        pa.field("group_size", pa.int64(), nullable=False),
    ]
)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Unit rows, so a dot product is the cosine similarity; zero vectors stay zero (distance 1 to all)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit


def _nearest_centroid(unit: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    labels = np.empty(len(unit), dtype=np.int64)
    for start in range(0, len(unit), BLOCK_ROWS):
        labels[start : start + BLOCK_ROWS] = np.argmax(unit[start : start + BLOCK_ROWS] @ centroids.T, axis=1)
    return labels


def cluster_labels(unit: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine) labels; deterministic for a given input and seed."""
    if clusters <= 1 or len(unit) <= clusters:
        return np.zeros(len(unit), dtype=np.int64)
    rng = np.random.default_rng(seed)
    sample = unit[rng.choice(len(unit), size=min(len(unit), KMEANS_SAMPLE), replace=False)]
    centroids = sample[rng.choice(len(sample), size=clusters, replace=False)].copy()
    for _ in range(KMEANS_ITERATIONS):
        labels = _nearest_centroid(sample, centroids)
        for cluster in range(clusters):
            members = sample[labels == cluster]
            if len(members):
                centroids[cluster] = members.sum(axis=0)
        centroids = normalized(centroids)
    return _nearest_centroid(unit, centroids)


def close_pairs(unit: np.ndarray, max_distance: float) -> Iterator[tuple[int, int]]:
    """Every pair (i < j) of rows within `max_distance` cosine distance, compared exactly, in blocks."""
    threshold = 1.0 - max_distance
    for start in range(0, len(unit), BLOCK_ROWS):
        block = unit[start : start + BLOCK_ROWS]
        similarity = block @ unit[start:].T
        rows, columns = np.nonzero(similarity >= threshold)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            if column > row:
                yield start + row, start + column


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass(frozen=True)
class Grouping:
    """The groups (one row per member, `GROUPS_SCHEMA`) and the figures the asset reports."""

    groups: pa.Table
    clips: int
    group_count: int
    duplicates: int
    max_cosine_distance: float

    @property
    def duplicate_rate(self) -> float:
        """Clips that are a near-duplicate of a kept one, over every clip compared."""
        return self.duplicates / self.clips if self.clips else 0.0

    @property
    def removed_clip_ids(self) -> frozenset[str]:
        kept = self.groups.column("kept").to_pylist()
        return frozenset(c for c, k in zip(self.groups.column("clip_id").to_pylist(), kept, strict=True) if not k)


def group_near_duplicates(
    clip_ids: Sequence[str],
    durations: Sequence[float | None],
    vectors: np.ndarray,
    max_cosine_distance: float = DEFAULT_MAX_COSINE_DISTANCE,
    cluster_size: int = CLUSTER_SIZE,
) -> Grouping:
    """Groups of clips within `max_cosine_distance` of each other (transitively), and who is kept."""
    if not 0 <= max_cosine_distance < 2:
        raise ValueError(f"max_cosine_distance {max_cosine_distance} is outside [0, 2)")
    count = len(clip_ids)
    unit = normalized(np.asarray(vectors, dtype=np.float32).reshape(count, -1)) if count else np.empty((0, 0))
    clusters = 1 if count <= 2 * cluster_size else math.ceil(count / cluster_size)
    labels = cluster_labels(unit, clusters)
    union = _UnionFind(count)
    for cluster in np.unique(labels):
        in_cluster = np.flatnonzero(labels == cluster)
        for i, j in close_pairs(unit[in_cluster], max_cosine_distance):
            union.union(int(in_cluster[i]), int(in_cluster[j]))
    components: dict[int, list[int]] = {}
    for item in range(count):
        components.setdefault(union.find(item), []).append(item)
    groups = sorted((m for m in components.values() if len(m) > 1), key=lambda m: min(clip_ids[i] for i in m))
    columns: dict[str, list[object]] = {name: [] for name in GROUPS_SCHEMA.names}
    duplicates = 0
    for group_id, members in enumerate(groups):
        kept = min(members, key=lambda i: (-(durations[i] or 0.0), clip_ids[i]))
        distances = 1.0 - unit[members] @ unit[kept]
        for member, distance in sorted(zip(members, distances.tolist(), strict=True), key=lambda m: clip_ids[m[0]]):
            columns["group_id"].append(group_id)
            columns["clip_id"].append(clip_ids[member])
            columns["kept_clip_id"].append(clip_ids[kept])
            columns["kept"].append(member == kept)
            columns["cosine_distance_to_kept"].append(max(0.0, distance))
            columns["group_size"].append(len(members))
        duplicates += len(members) - 1
    table = pa.Table.from_pydict(columns, schema=GROUPS_SCHEMA)
    return Grouping(table, count, len(groups), duplicates, max_cosine_distance)


def rate_jumped(previous: float | None, current: float, tolerance: float = DEFAULT_RATE_JUMP) -> bool:
    """Whether the duplicate rate rose by more than `tolerance` (absolute) since the previous grouping."""
    return previous is not None and current - previous > tolerance
