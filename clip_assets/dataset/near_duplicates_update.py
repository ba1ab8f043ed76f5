"""Building and updating `dataset/near_duplicates.parquet` from the vector table, in bounded memory.

Never every vector at once: the vector table (Lance) is streamed in batches, twice. The first pass
assigns each clip to its k-means centroid and sums a fingerprint of its id and vector per cluster;
the second spills the unit vectors of the clusters to decide, in (cluster, rank) order, into a
local temporary file, from which each cluster is compared in blocks (`near_duplicates.
earlier_best_match`). Memory holds the clips' ids and per-clip figures (tens of bytes a clip), one
scan batch, the k-means sample and one cluster's blocks, each bounded by `DedupSettings.memory_mb`.

Incremental: the fitted centroids are kept in the output root (`near_duplicates_centroids.npy`) and
the per-cluster fingerprints in the summary JSON. An update assigns every clip to the kept centroids
and re-decides exactly the clusters whose members or vectors changed (new videos' clips are compared
with the clips already in their cluster; a removed video's clusters are re-decided without it); the
decisions of every other cluster are copied. k-means is re-fitted, and so every cluster re-decided,
when there are no kept centroids, when `n_clusters`, `random_state` or the embedding's size changed,
when the dataset grew or shrank by `REFIT_FACTOR` since the fit, or when asked (`refit`). A change of
`rule`, `eps` or `which_to_keep` re-decides every cluster with the kept centroids.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.near_duplicates import (
    CENTROID,
    DECISIONS_SCHEMA,
    GROUPS_SCHEMA,
    KMEANS_SAMPLE,
    REFIT_FACTOR,
    Centroids,
    ClusterRows,
    DedupSettings,
    Grouping,
    fit_centroids,
    nemo_decisions,
    normalized,
    number_groups,
    ranking_order,
    rate_jumped,
    row_fingerprint,
    transitive_groups,
)
from clip_assets.dataset.tables import LOCK_TIMEOUT_S, open_vectors, read_clip_index
from clip_assets.storage import Storage, holds, put_if_changed, read_if_exists

if TYPE_CHECKING:
    import lance

# Rows per batch of a scan of the vector table (fewer when the memory budget asks for it).
SCAN_ROWS = 8192
_FINGERPRINT_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Refit:
    """Whether k-means is fitted anew in this build, and why (or why not)."""

    needed: bool
    reason: str


@dataclass(frozen=True)
class NearDuplicatesBuild:
    """The decisions for the vector table as it is, and what it took: the fit, the clusters re-decided."""

    grouping: Grouping
    refit: Refit
    centroids: Centroids | None
    fingerprints: tuple[str, ...]
    clusters_decided: int
    clips_decided: int
    fit_clips: int
    # The vectors compared: None before any vector exists.
    model: EmbeddingModel | None = None


@dataclass(frozen=True)
class NearDuplicatesUpdate:
    """A build as written, with the rates the `duplicate_rate_steady` check compares."""

    build: NearDuplicatesBuild
    previous_rate: float | None
    # The last rate the check accepted, this build's rate is measured against.
    baseline_rate: float | None

    @property
    def grouping(self) -> Grouping:
        return self.build.grouping

    @property
    def rate_jumped(self) -> bool:
        return rate_jumped(self.baseline_rate, self.grouping.duplicate_rate)

    def to_json(self) -> dict[str, Any]:
        grouping, build = self.grouping, self.build
        centroids = build.centroids
        model = build.model
        return {
            "embedding_model": None if model is None else model.name,
            "embedding_version": None if model is None else model.version,
            "clips": grouping.clips,
            "groups": grouping.group_count,
            "duplicates": grouping.duplicates,
            "duplicate_rate": grouping.duplicate_rate,
            "previous_duplicate_rate": self.previous_rate,
            "baseline_duplicate_rate": self.baseline_rate,
            "rate_jumped": self.rate_jumped,
            "settings": asdict(grouping.settings),
            "decision_key": grouping.settings.decision_key(),
            "clusters": grouping.clusters,
            "refit": asdict(build.refit),
            "clusters_decided": build.clusters_decided,
            "clips_decided": build.clips_decided,
            "fit": None
            if centroids is None
            else {
                "clips": build.fit_clips,
                "dim": centroids.dim,
                "random_state": grouping.settings.random_state,
                "centroids_sha256": centroids.digest(),
            },
            "fingerprints": list(build.fingerprints),
        }


def read_near_duplicates_summary(storage: Storage) -> dict[str, Any] | None:
    """The figures and state of the last build written, or None before the first."""
    data = read_if_exists(storage, layout.near_duplicates_summary_key())
    document = json.loads(data) if data is not None else None
    return document if isinstance(document, dict) else None


def _read_centroids(storage: Storage) -> Centroids | None:
    data = read_if_exists(storage, layout.near_duplicates_centroids_key())
    return None if data is None else Centroids(np.load(io.BytesIO(data), allow_pickle=False))


def refit_needed(
    settings: DedupSettings,
    clips: int,
    dim: int,
    kept: Centroids | None,
    state: dict[str, Any] | None,
    asked: bool,
    model: EmbeddingModel | None = None,
) -> Refit:
    """When the kept centroids no longer serve (the module docstring lists the cases)."""
    fit = (state or {}).get("fit") or {}
    if asked:
        return Refit(True, "asked for (refit)")
    if kept is None or not fit:
        return Refit(True, "no fitted centroids yet")
    fitted_on = ((state or {}).get("embedding_model"), (state or {}).get("embedding_version"))
    if model is not None and fitted_on != (model.name, model.version):
        return Refit(True, f"the embedding model changed ({fitted_on[0]} -> {model.name})")
    if fit.get("centroids_sha256") != kept.digest():
        return Refit(True, "the kept centroids are not those the last build used")
    if kept.dim != dim:
        return Refit(True, f"the embedding's size changed ({kept.dim} -> {dim})")
    if fit.get("random_state") != settings.random_state:
        return Refit(True, "random_state changed")
    if settings.n_clusters is not None and settings.clusters_for(clips) != len(kept):
        return Refit(True, f"n_clusters changed ({len(kept)} -> {settings.clusters_for(clips)})")
    fitted = int(fit["clips"])
    if settings.n_clusters is None and not fitted / REFIT_FACTOR <= clips <= fitted * REFIT_FACTOR:
        return Refit(True, f"the dataset went from {fitted} to {clips} clips since the fit")
    return Refit(False, f"kept centroids fitted on {fitted} clips")


def _unit_batches(
    table: lance.LanceDataset, rows: int, positions: np.ndarray | None = None
) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """(clip ids, unit vectors) of the table's rows in position order (fragment by fragment, live rows
    only), or of the rows at `positions` (sorted), `rows` at a time.

    Read by position within each fragment (`LanceFragment.take`): a scan's read-ahead and page buffers
    hold several times a batch, which the memory budget has no room for, and the dataset-wide `take`
    re-maps positions over the deletion files on every call (seconds a call once a video was replaced)."""
    start = 0
    for fragment in table.get_fragments():
        stop = start + fragment.count_rows()
        if positions is None:
            local = np.arange(stop - start)
        else:
            local = positions[np.searchsorted(positions, start) : np.searchsorted(positions, stop)] - start
        for first in range(0, len(local), rows):
            batch = fragment.take(local[first : first + rows].tolist(), columns=[ci.CLIP_ID, ci.EMBEDDING])
            yield batch.column(ci.CLIP_ID).combine_chunks(), _unit_rows(batch.column(ci.EMBEDDING))
        start = stop


def _unit_rows(column: pa.ChunkedArray) -> np.ndarray:
    vectors = column.combine_chunks()
    dim = int(vectors.type.list_size)
    return normalized(vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), dim))


def _fit(table: lance.LanceDataset, settings: DedupSettings, clips: int, dim: int) -> Centroids:
    """k-means on a seeded sample of the table, as large as the memory budget allows."""
    clusters = settings.clusters_for(clips)
    budget = settings.memory_mb * 2**20 // (4 * 4 * (dim + clusters))
    size = min(clips, KMEANS_SAMPLE, max(budget, clusters))
    picked = np.sort(np.random.default_rng(settings.random_state).choice(clips, size=size, replace=False))
    sample = np.empty((size, dim), dtype=np.float32)
    filled = 0
    for _, unit in _unit_batches(table, SCAN_ROWS, picked):
        sample[filled : filled + len(unit)] = unit
        filled += len(unit)
    return fit_centroids(sample, clusters, settings.random_state)


@dataclass
class _Assigned:
    """The first pass over the table: per clip (in scan order) its id, centroid and distance to it."""

    clip_ids: pa.Array
    labels: np.ndarray
    distances: np.ndarray
    fingerprints: list[str]


def _assign(table: lance.LanceDataset, centroids: Centroids, scan_rows: int) -> _Assigned:
    ids: list[pa.Array] = []
    labels: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    sums = [0] * len(centroids)
    for batch_ids, unit in _unit_batches(table, scan_rows):
        batch_labels, batch_distances = centroids.assign(unit)
        for clip_id, label, vector in zip(batch_ids.to_pylist(), batch_labels.tolist(), unit, strict=True):
            sums[label] = (sums[label] + row_fingerprint(clip_id, vector)) & _FINGERPRINT_MASK
        ids.append(batch_ids)
        labels.append(batch_labels)
        distances.append(batch_distances)
    return _Assigned(
        pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
        np.concatenate(labels) if labels else np.empty(0, np.int32),
        np.concatenate(distances) if distances else np.empty(0, np.float32),
        [f"{s:016x}" for s in sums],
    )


def _spill(table: lance.LanceDataset, destination: np.ndarray, scan_rows: int, descriptor: int, dim: int) -> None:
    """Writes each clip with a destination (>= 0) at that row of the spill file, in runs of adjacent rows;
    only those clips are read from the table."""
    row_bytes = 4 * dim
    positions = np.flatnonzero(destination >= 0)
    start = 0
    for _, unit in _unit_batches(table, scan_rows, positions):
        targets = destination[positions[start : start + len(unit)]]
        start += len(unit)
        order = np.argsort(targets)
        rows = targets[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(np.arange(len(order)), breaks):
            block = np.ascontiguousarray(unit[order[run]], dtype=np.float32)
            os.pwrite(descriptor, block.tobytes(), int(rows[run[0]]) * row_bytes)


def _spilled_reader(descriptor: int, first_row: int, dim: int) -> Any:
    def read(start: int, stop: int) -> np.ndarray:
        data = os.pread(descriptor, (stop - start) * 4 * dim, (first_row + start) * 4 * dim)
        return np.frombuffer(data, dtype=np.float32).reshape(stop - start, dim)

    return read


def _durations(storage: Storage, clip_ids: pa.Array) -> np.ndarray:
    """Each clip's duration from the clip index (0 where unknown), for the transitive rule's keep choice."""
    index = read_clip_index(storage, [ci.CLIP_ID, ci.DURATION])
    where = pc.index_in(clip_ids, value_set=index.column(ci.CLIP_ID).combine_chunks())
    found = index.column(ci.DURATION).combine_chunks().take(where)
    return np.asarray(pc.fill_null(found, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)


def _previous_rows(storage: Storage, settings: DedupSettings, state: dict[str, Any] | None) -> pa.Table | None:
    """The last build's table, where its decisions can be re-used (same rule and decision settings)."""
    if state is None or state.get("decision_key") != settings.decision_key():
        return None
    data = read_if_exists(storage, layout.near_duplicates_key())
    if data is None:
        return None
    rows = pq.read_table(io.BytesIO(data))
    schema = DECISIONS_SCHEMA if settings.rule == "nemo" else GROUPS_SCHEMA
    return rows if rows.schema.equals(schema) else None


def _rows_by_cluster(rows: pa.Table) -> dict[int, list[pa.Table]]:
    """The last build's rows of each cluster (slices, no copy; the table is written in cluster order)."""
    clusters = rows.column(CENTROID).to_numpy()
    if len(clusters) and np.any(np.diff(clusters) < 0):
        rows = rows.sort_by([(CENTROID, "ascending")])
        clusters = rows.column(CENTROID).to_numpy()
    found: dict[int, list[pa.Table]] = {}
    for cluster in np.unique(clusters).tolist():
        start, stop = np.searchsorted(clusters, [cluster, cluster + 1])
        found[cluster] = [rows.slice(int(start), int(stop - start))]
    return found


def build_near_duplicates(
    storage: Storage, settings: DedupSettings, *, model: EmbeddingModel | None = None, refit: bool = False
) -> NearDuplicatesBuild:
    """The decisions for `model`'s vector table (the dataset's configured model, or its only one, when
    None) as it is now, re-using the last build where it still holds."""
    found = open_vectors(storage, model)
    vectors = found[1] if found is not None else None
    model = found[0].model if found is not None else None
    clips = vectors.count_rows() if vectors is not None else 0
    empty = DECISIONS_SCHEMA.empty_table() if settings.rule == "nemo" else GROUPS_SCHEMA.empty_table()
    if vectors is None or not clips:
        return NearDuplicatesBuild(Grouping(empty, settings, 0, 0), Refit(False, "no vectors"), None, (), 0, 0, 0)
    dim = int(vectors.schema.field(ci.EMBEDDING).type.list_size)
    state = read_near_duplicates_summary(storage)
    kept = _read_centroids(storage)
    decision = refit_needed(settings, clips, dim, kept, state, refit, model)
    centroids = kept if kept is not None and not decision.needed else _fit(vectors, settings, clips, dim)
    fit_clips = clips if decision.needed else int((state or {})["fit"]["clips"])
    scan_rows = max(1, min(SCAN_ROWS, settings.memory_mb * 2**20 // (16 * (dim + len(centroids)))))
    assigned = _assign(vectors, centroids, scan_rows)
    previous = None if decision.needed else _previous_rows(storage, settings, state)
    stored = list((state or {}).get("fingerprints") or [])
    redo = [
        cluster
        for cluster in range(len(centroids))
        if previous is None or cluster >= len(stored) or stored[cluster] != assigned.fingerprints[cluster]
    ]
    order = np.argsort(assigned.labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(assigned.labels, minlength=len(centroids)))])
    destination = np.full(clips, -1, dtype=np.int64)
    ranked: dict[int, tuple[int, np.ndarray]] = {}
    offset = 0
    for cluster in redo:
        members = order[bounds[cluster] : bounds[cluster + 1]]
        if not len(members):
            continue
        ranking = ranking_order(
            assigned.clip_ids.take(pa.array(members)),
            assigned.distances[members],
            settings.which_to_keep,
            settings.random_state,
            cluster,
        )
        members = members[ranking]
        destination[members] = np.arange(offset, offset + len(members))
        ranked[cluster] = (offset, members)
        offset += len(members)
    durations = _durations(storage, assigned.clip_ids) if settings.rule == "transitive" and ranked else None
    kept_rows = _rows_by_cluster(previous) if previous is not None else {}
    parts: list[pa.Table] = []
    with tempfile.TemporaryFile(prefix="near-duplicates-") as spill:
        descriptor = spill.fileno()
        if ranked:
            _spill(vectors, destination, scan_rows, descriptor, dim)
        for cluster in range(len(centroids)):
            if cluster not in ranked:
                parts.extend(kept_rows.get(cluster, []))
                continue
            first_row, members = ranked[cluster]
            rows = ClusterRows(
                cluster,
                assigned.clip_ids.take(pa.array(members)),
                assigned.distances[members],
                _spilled_reader(descriptor, first_row, dim),
                durations[members].tolist() if durations is not None else (),
            )
            if settings.rule == "nemo":
                parts.append(nemo_decisions(rows, settings, dim))
            else:
                parts.append(transitive_groups(rows, settings, dim))
    table = pa.concat_tables(parts) if parts else empty
    if settings.rule == "transitive":
        table = number_groups(table)
    grouping = Grouping(table, settings, clips, len(centroids))
    return NearDuplicatesBuild(
        grouping, decision, centroids, tuple(assigned.fingerprints), len(ranked), offset, fit_clips, model
    )


def _baseline(previous: dict[str, Any] | None) -> float | None:
    """The rate the next build is measured against: the last accepted one, which a jump does not move."""
    if previous is None:
        return None
    recorded = previous.get("baseline_duplicate_rate") if previous.get("rate_jumped") else previous["duplicate_rate"]
    return None if recorded is None else float(recorded)


def update_near_duplicates(
    storage: Storage,
    settings: DedupSettings | None = None,
    *,
    model: EmbeddingModel | None = None,
    refit: bool = False,
    accept_rate: bool = False,
) -> NearDuplicatesUpdate:
    """Bring the near-duplicates up to date with the vector table and write the table (Parquet), the
    centroids (.npy, when fitted anew) and the figures and state (JSON).

    The `duplicate_rate_steady` check compares a build's rate with the last rate it accepted: after
    a jump that baseline stays where it was (the check keeps warning, however often the asset is
    re-materialized) until a build's rate is back within the tolerance, or `accept_rate` takes this
    build's rate as the new baseline. A build that finds the clusters as stored and derives the stored table writes
    nothing (a re-run of an unchanged dataset costs no request); the state then stays the last written one's."""
    build = build_near_duplicates(storage, settings or DedupSettings(), model=model, refit=refit)
    sink = io.BytesIO()
    pq.write_table(build.grouping.table, sink, compression="zstd")
    table = sink.getvalue()
    previous = read_near_duplicates_summary(storage)
    if (
        previous is not None
        and not accept_rate
        and not build.refit.needed
        and previous.get("fingerprints") == list(build.fingerprints)
        and previous.get("decision_key") == build.grouping.settings.decision_key()
        and holds(storage, layout.near_duplicates_key(), table, storage.stat(layout.near_duplicates_key()))
    ):
        return _rated(build, previous, accept_rate)  # the same decisions of the same clusters: nothing written
    with storage.lock(layout.dataset_lock_key(), LOCK_TIMEOUT_S):
        update = _rated(build, read_near_duplicates_summary(storage), accept_rate)
        if build.centroids is not None and build.refit.needed:
            array = io.BytesIO()
            np.save(array, build.centroids.means, allow_pickle=False)
            storage.put(layout.near_duplicates_centroids_key(), array.getvalue())
        put_if_changed(storage, layout.near_duplicates_key(), table)
        put_if_changed(storage, layout.near_duplicates_summary_key(), json.dumps(update.to_json(), indent=1).encode())
    return update


def _rated(build: NearDuplicatesBuild, previous: dict[str, Any] | None, accept_rate: bool) -> NearDuplicatesUpdate:
    """The build with the rates its check compares: the last build's, and the baseline it is measured against."""
    previous_rate = None if previous is None else float(previous["duplicate_rate"])
    baseline = build.grouping.duplicate_rate if accept_rate else _baseline(previous)
    return NearDuplicatesUpdate(build, previous_rate, baseline)
