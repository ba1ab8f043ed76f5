"""Near-duplicate clips across the whole dataset: NeMo Curator 1.4.0's semantic dedup rule, on CPU.

NeMo's `SemanticDeduplicationWorkflow` (k-means, then `PairwiseStage`, then `IdentifyDuplicatesStage`):

1. k-means on the unit-normalized embeddings (Euclidean, as cuML's `KMeans` there); each clip's
   `centroid` is its nearest centroid and `cosine_dist_to_cent` is 1 - cos(clip, centroid).
2. Within each cluster the clips are ranked by `which_to_keep`: `"hard"` (NeMo's default) sorts by
   `cosine_dist_to_cent` descending, then by clip id descending (NeMo sorts both keys the same way);
   `"easy"` both ascending; `"random"` a seeded shuffle.
3. Each clip's `max_id` is the earlier-ranked clip of its cluster it is most similar to, and
   `cosine_sim_score` that cosine similarity (ties: the earliest-ranked); the first-ranked clip
   matches itself with score 0. A clip is removed (`kept` false) when `cosine_sim_score >= 1 - eps`.
   An earlier clip stays eligible as a match even if it is itself removed, so nothing chains: with
   a~c, b~c and a!~b only one of the three goes.

Two clips either side of a cluster boundary are never compared, as in NeMo; near-duplicates sit close
to each other and so almost always to the same centroid. The similarities are computed in float32
(NeMo's `pairwise_compute_dtype="float32"`; its workflow defaults to float16, so a pair within about
1e-3 of the threshold can fall the other way there). NeMo's `"random"` shuffle is cuDF's; this one is
numpy's, seeded by `random_state` and the cluster, so it is reproducible but not NeMo's permutation.

The other rule, `"transitive"`, is clip-assets' earlier one: pairs within `eps` cosine distance (in
the same clusters) are joined with union-find, so a chain a~b~c is one group even when a and c are
far apart, and each group keeps its longest clip (ties: the smallest clip id).

Everything here is pure and works on one cluster's rows at a time, so the caller bounds memory
(`clip_assets.dataset.update` streams the vector table cluster by cluster).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rule = Literal["nemo", "transitive"]
WhichToKeep = Literal["hard", "easy", "random"]
RULES: tuple[Rule, ...] = ("nemo", "transitive")
WHICH_TO_KEEP: tuple[WhichToKeep, ...] = ("hard", "easy", "random")

# NeMo's shipped semantic-dedup pipeline configuration uses eps 0.01.
DEFAULT_EPS = 0.01
# Without `n_clusters`, a dataset gets one cluster per this many clips (one cluster up to twice it).
CLUSTER_SIZE = 4096
# NeMo's defaults: `random_state` 42, `pairwise_batch_size` 1024, k-means `tol` 1e-4.
DEFAULT_RANDOM_STATE = 42
DEFAULT_PAIRWISE_BATCH_SIZE = 1024
KMEANS_TOL = 1e-4
KMEANS_MAX_ITER = 50
# Centroids are fitted on a sample of at most this many clips (assignment then covers every clip).
KMEANS_SAMPLE = 65_536
# The vectors, similarity blocks and k-means sample held at once, in MiB.
DEFAULT_MEMORY_MB = 512
# The fitted centroids are kept until the dataset has grown or shrunk by this factor since the fit.
REFIT_FACTOR = 2.0
# A duplicate rate this many points above the last accepted one is worth a look.
DEFAULT_RATE_JUMP = 0.05

# NeMo's column names (`max_id` and `cosine_sim_score` from `PairwiseStage`, `centroid` and
# `cosine_dist_to_cent` from `KMeansStage`); `clip_id` is NeMo's `id`.
CLIP_ID = "clip_id"
CENTROID = "centroid"
COSINE_DIST_TO_CENT = "cosine_dist_to_cent"
MAX_ID = "max_id"
COSINE_SIM_SCORE = "cosine_sim_score"
KEPT = "kept"
RANK = "rank"

DECISIONS_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field(CENTROID, pa.int32(), nullable=False),
        pa.field(RANK, pa.int64(), nullable=False),
        pa.field(COSINE_DIST_TO_CENT, pa.float32(), nullable=False),
        pa.field(MAX_ID, pa.string(), nullable=False),
        pa.field(COSINE_SIM_SCORE, pa.float32(), nullable=False),
        pa.field(KEPT, pa.bool_(), nullable=False),
    ]
)

GROUPS_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field("kept_clip_id", pa.string(), nullable=False),
        pa.field(KEPT, pa.bool_(), nullable=False),
        pa.field("cosine_distance_to_kept", pa.float32(), nullable=False),
        pa.field("group_size", pa.int64(), nullable=False),
        pa.field(CENTROID, pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class DedupSettings:
    """How near-duplicates are found; NeMo's names where NeMo has the setting."""

    rule: Rule = "nemo"
    eps: float = DEFAULT_EPS
    which_to_keep: WhichToKeep = "hard"
    # None: one cluster per `CLUSTER_SIZE` clips, fixed at each fit.
    n_clusters: int | None = None
    random_state: int = DEFAULT_RANDOM_STATE
    pairwise_batch_size: int = DEFAULT_PAIRWISE_BATCH_SIZE
    memory_mb: int = DEFAULT_MEMORY_MB

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"near_duplicates rule {self.rule!r} is not one of {list(RULES)}")
        if self.which_to_keep not in WHICH_TO_KEEP:
            raise ValueError(
                f"near_duplicates which_to_keep {self.which_to_keep!r} is not one of {list(WHICH_TO_KEEP)}"
            )
        if not 0 <= self.eps < 1:
            raise ValueError(f"near_duplicates eps {self.eps} is outside [0, 1): set a small positive value, e.g. 0.01")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"near_duplicates n_clusters {self.n_clusters} must be at least 1 (or unset)")
        if self.pairwise_batch_size < 1 or self.memory_mb < 16:
            raise ValueError("near_duplicates pairwise_batch_size must be >= 1 and memory_mb >= 16")

    @property
    def threshold(self) -> float:
        """The cosine similarity at and above which a clip is a near-duplicate."""
        return 1.0 - self.eps

    def decision_key(self) -> dict[str, object]:
        """The settings a cluster's decisions depend on (beyond its members): a change re-decides all."""
        key: dict[str, object] = {"rule": self.rule, "eps": self.eps}
        if self.rule == "nemo":
            key["which_to_keep"] = self.which_to_keep
            if self.which_to_keep == "random":
                key["random_state"] = self.random_state
        return key

    def clusters_for(self, clips: int) -> int:
        """The number of k-means clusters a fit over `clips` clips uses."""
        if self.n_clusters is not None:
            return max(1, min(self.n_clusters, clips))
        return 1 if clips <= 2 * CLUSTER_SIZE else math.ceil(clips / CLUSTER_SIZE)

    def rows_in_memory(self, dim: int) -> int:
        """Vectors held at once by the pairwise pass: the budget over a row's vector plus its share of
        the similarity block (a row against a batch of queries)."""
        per_row = 4 * (dim + 2 * self.pairwise_batch_size)
        return max(self.pairwise_batch_size, self.memory_mb * 2**20 // (2 * per_row))


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (float32), so a dot product is the cosine similarity; zero vectors stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit


def row_fingerprint(clip_id: str, vector: np.ndarray) -> int:
    """64 bits of a clip's id and vector bytes; summed per cluster (order-free) to see a cluster change."""
    digest = hashlib.blake2b(clip_id.encode(), digest_size=8)
    digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return int.from_bytes(digest.digest(), "little")


class Centroids:
    """Fitted k-means centroids (the means, as cuML keeps them) and their unit directions."""

    def __init__(self, means: np.ndarray) -> None:
        self.means = np.asarray(means, dtype=np.float32)
        self.unit = normalized(self.means)
        self._squared_norms = np.einsum("ij,ij->i", self.means, self.means)

    def __len__(self) -> int:
        return len(self.means)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def digest(self) -> str:
        """sha256 of the means' bytes: ties a build's state to the centroids it used."""
        return hashlib.sha256(self.means.tobytes()).hexdigest()

    def nearest(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each unit row's nearest centroid (Euclidean, as NeMo assigns) and its squared distance minus
        the row's own squared norm."""
        offsets = self._squared_norms[None, :] - 2 * (unit @ self.means.T)
        labels = np.argmin(offsets, axis=1).astype(np.int32)
        return labels, offsets[np.arange(len(unit)), labels]

    def assign(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each unit row's nearest centroid and 1 - cos to it (`cosine_dist_to_cent`)."""
        labels, _ = self.nearest(unit)
        distances = 1.0 - np.einsum("ij,ij->i", unit, self.unit[labels])
        return labels, distances.astype(np.float32)


def fit_centroids(
    sample: np.ndarray, clusters: int, seed: int, *, max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL
) -> Centroids:
    """Lloyd's k-means on unit rows, seeded by k-means++ on a sub-sample; an empty cluster keeps its centroid."""
    rng = np.random.default_rng(seed)
    if clusters >= len(sample):
        return Centroids(sample[:clusters].copy())
    seeds = sample[rng.choice(len(sample), size=min(len(sample), 32 * clusters), replace=False)]
    means = np.empty((clusters, sample.shape[1]), dtype=np.float32)
    means[0] = seeds[rng.integers(len(seeds))]
    closest = np.sum((seeds - means[0]) ** 2, axis=1)
    for index in range(1, clusters):
        total = float(closest.sum())
        pick = rng.choice(len(seeds), p=closest / total) if total > 0 else rng.integers(len(seeds))
        means[index] = seeds[pick]
        closest = np.minimum(closest, np.sum((seeds - means[index]) ** 2, axis=1))
    squared_norms = np.einsum("ij,ij->i", sample, sample)
    previous_inertia = math.inf
    for _ in range(max_iter):
        labels, offsets = Centroids(means).nearest(sample)
        inertia = float(np.sum(squared_norms + offsets))
        for cluster in range(clusters):
            members = labels == cluster
            if members.any():
                means[cluster] = sample[members].mean(axis=0)
        if previous_inertia - inertia <= tol * max(inertia, 1e-12):
            break
        previous_inertia = inertia
    return Centroids(means)


def ranking_order(
    clip_ids: pa.Array, distances: np.ndarray, which_to_keep: WhichToKeep, seed: int, cluster: int
) -> np.ndarray:
    """The order NeMo ranks one cluster's clips in (first = most preferred to keep)."""
    if which_to_keep == "random":
        by_id = np.asarray(pc.sort_indices(clip_ids))
        shuffle = np.random.default_rng([seed, cluster]).permutation(len(by_id))
        return np.asarray(by_id[shuffle], dtype=np.int64)
    order = "descending" if which_to_keep == "hard" else "ascending"
    table = pa.table({"distance": pa.array(distances, pa.float32()), "id": clip_ids})
    return np.asarray(pc.sort_indices(table, sort_keys=[("distance", order), ("id", order)]), dtype=np.int64)


RowReader = Callable[[int, int], np.ndarray]


def _earlier_similarities(
    read: RowReader, count: int, batch_size: int, rows_in_memory: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Blocks of the ranked rows' similarity matrix, queries (rows) by candidates (columns): yields
    (query_start, candidate_start, block) with every candidate not ranked before its query at -inf.

    `read(start, stop)` returns ranked unit rows `start:stop`. Queries go `batch_size` at a time
    against candidates read `rows_in_memory` at a time, so memory holds a candidate block, a query
    batch and their similarity block whatever the cluster's size (a cluster that fits is read once)."""
    whole = read(0, count) if count <= rows_in_memory else None
    for query_start in range(0, count, batch_size):
        query_stop = min(query_start + batch_size, count)
        queries = whole[query_start:query_stop] if whole is not None else read(query_start, query_stop)
        for candidate_start in range(0, query_stop - 1, rows_in_memory):
            candidate_stop = min(candidate_start + rows_in_memory, query_stop - 1)
            if whole is not None:
                candidates = whole[candidate_start:candidate_stop]
            else:
                candidates = read(candidate_start, candidate_stop)
            similarity = queries @ candidates.T
            if candidate_stop > query_start:
                query_rows = np.arange(query_start, query_stop)[:, None]
                similarity[query_rows <= np.arange(candidate_start, candidate_stop)[None, :]] = -np.inf
            yield query_start, candidate_start, similarity


def earlier_best_match(
    read: RowReader, count: int, batch_size: int, rows_in_memory: int
) -> tuple[np.ndarray, np.ndarray]:
    """NeMo's `pairwise_cosine_similarity_batched` in numpy: for each ranked unit row `i`, the index
    of its most similar row `j < i` (ties: the smallest `j`) and that similarity; row 0 gets (0, 0)."""
    best = np.full(count, -np.inf, dtype=np.float32)
    best_index = np.zeros(count, dtype=np.int64)
    for query_start, candidate_start, similarity in _earlier_similarities(read, count, batch_size, rows_in_memory):
        queries = slice(query_start, query_start + len(similarity))
        block_index = np.argmax(similarity, axis=1)
        block_best = similarity[np.arange(len(similarity)), block_index]
        better = block_best > best[queries]
        best[queries] = np.where(better, block_best, best[queries])
        best_index[queries] = np.where(better, block_index + candidate_start, best_index[queries])
    if count:
        best[0], best_index[0] = 0.0, 0
    return best_index, best


@dataclass(frozen=True)
class ClusterRows:
    """One cluster's clips in ranked order: ids, centroid distances, and a reader of their unit vectors."""

    cluster: int
    clip_ids: pa.Array
    distances: np.ndarray
    read: RowReader
    durations: Sequence[float | None] = ()


def nemo_decisions(rows: ClusterRows, settings: DedupSettings, dim: int) -> pa.Table:
    """NeMo's decision for every clip of one ranked cluster (`DECISIONS_SCHEMA`)."""
    count = len(rows.clip_ids)
    index, score = earlier_best_match(rows.read, count, settings.pairwise_batch_size, settings.rows_in_memory(dim))
    return pa.Table.from_arrays(
        [
            rows.clip_ids,
            pa.array(np.full(count, rows.cluster, dtype=np.int32)),
            pa.array(np.arange(count, dtype=np.int64)),
            pa.array(rows.distances, pa.float32()),
            rows.clip_ids.take(pa.array(index)),
            pa.array(score, pa.float32()),
            pa.array(score < settings.threshold),
        ],
        schema=DECISIONS_SCHEMA,
    )


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


def transitive_groups(rows: ClusterRows, settings: DedupSettings, dim: int) -> pa.Table:
    """The transitive rule within one cluster: a row per member of each group (`GROUPS_SCHEMA`, with
    `group_id` -1 until `number_groups` numbers the groups of the whole dataset)."""
    count = len(rows.clip_ids)
    ids = rows.clip_ids.to_pylist()
    union = _UnionFind(count)
    blocks = _earlier_similarities(rows.read, count, settings.pairwise_batch_size, settings.rows_in_memory(dim))
    for query_start, candidate_start, similarity in blocks:
        for query, candidate in zip(*np.nonzero(similarity >= settings.threshold), strict=True):
            union.union(candidate_start + int(candidate), query_start + int(query))
    components: dict[int, list[int]] = {}
    for item in range(count):
        components.setdefault(union.find(item), []).append(item)
    columns: dict[str, list[object]] = {name: [] for name in GROUPS_SCHEMA.names}
    for members in (m for m in components.values() if len(m) > 1):
        kept = min(members, key=lambda i: (-(rows.durations[i] or 0.0), ids[i]))
        kept_vector = rows.read(kept, kept + 1)[0]
        for member in members:
            distance = 1.0 - float(rows.read(member, member + 1)[0] @ kept_vector)
            columns["group_id"].append(-1)
            columns[CLIP_ID].append(ids[member])
            columns["kept_clip_id"].append(ids[kept])
            columns[KEPT].append(member == kept)
            columns["cosine_distance_to_kept"].append(max(0.0, distance))
            columns["group_size"].append(len(members))
            columns[CENTROID].append(rows.cluster)
    return pa.Table.from_pydict(columns, schema=GROUPS_SCHEMA)


def number_groups(groups: pa.Table) -> pa.Table:
    """Group ids in the order of each group's smallest clip id, members by clip id (stable output)."""
    members: dict[str, list[int]] = {}
    for row, kept_id in enumerate(groups.column("kept_clip_id").to_pylist()):
        members.setdefault(kept_id, []).append(row)
    ids = groups.column(CLIP_ID).to_pylist()
    ordered = sorted(members.values(), key=lambda rows: min(ids[r] for r in rows))
    take: list[int] = []
    numbers: list[int] = []
    for number, rows in enumerate(ordered):
        for row in sorted(rows, key=lambda r: ids[r]):
            take.append(row)
            numbers.append(number)
    numbered = groups.take(pa.array(take, pa.int64()))
    return numbered.set_column(0, "group_id", pa.array(numbers, pa.int64()))


@dataclass(frozen=True)
class Grouping:
    """A near-duplicates table (`DECISIONS_SCHEMA` or, for the transitive rule, `GROUPS_SCHEMA`) and
    the figures the asset reports."""

    table: pa.Table
    settings: DedupSettings
    clips: int
    clusters: int

    @property
    def removed_clip_ids(self) -> frozenset[str]:
        removed = self.table.filter(pc.invert(self.table.column(KEPT)))
        return frozenset(removed.column(CLIP_ID).to_pylist())

    @property
    def duplicates(self) -> int:
        """Clips left out as a near-duplicate of another."""
        kept: int = pc.sum(self.table.column(KEPT)).as_py() or 0
        return len(self.table) - kept

    @property
    def group_count(self) -> int:
        """Transitive rule: its groups. NeMo's rule: the distinct clips the removed ones matched (`max_id`)."""
        if self.settings.rule == "transitive":
            return len(pc.unique(self.table.column("kept_clip_id")))
        removed = self.table.filter(pc.invert(self.table.column(KEPT)))
        return len(pc.unique(removed.column(MAX_ID)))

    @property
    def duplicate_rate(self) -> float:
        """Clips left out as near-duplicates, over every clip compared."""
        return self.duplicates / self.clips if self.clips else 0.0


def rate_jumped(baseline: float | None, current: float, tolerance: float = DEFAULT_RATE_JUMP) -> bool:
    """Whether the duplicate rate rose by more than `tolerance` (absolute) above the accepted baseline."""
    return baseline is not None and current - baseline > tolerance
