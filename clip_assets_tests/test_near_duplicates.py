"""Near-duplicates by NeMo Curator 1.4.0's rule (and the transitive option), against expectations worked by hand
and an independent re-implementation.

The rule's test vectors: NeMo's own worked example (the docstring of
`nemo_curator/stages/deduplication/semantic/pairwise.py:pairwise_cosine_similarity_batched`: eps 0.1, B and
E removed, A, C and D kept), chains (a~c, b~c, a!~b; a 4-clip chain), ties. The builds run on real Lance
tables and are compared with `reference_decisions` below: plain numpy, the whole similarity matrix, Python
sorting, no code shared with `clip_assets.dataset.near_duplicates`.
"""

import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets import layout
from clip_assets.dataset.near_duplicates import (
    ClusterRows,
    DedupSettings,
    earlier_best_match,
    nemo_decisions,
    ranking_order,
    transitive_groups,
)
from clip_assets.dataset.near_duplicates_update import update_near_duplicates
from clip_assets.dataset.tables import table_location
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import write_vectors

# NeMo's docstring example, rows in ranked order.
NEMO_EXAMPLE = {
    "A": [1.00, 0.00, 0.00, 0.00],
    "B": [0.96, 0.28, 0.00, 0.00],
    "C": [0.00, 1.00, 0.00, 0.00],
    "D": [0.00, 0.00, 1.00, 0.00],
    "E": [0.00, 0.96, 0.00, 0.28],
}


def ranked_rows(vectors, ids=None, cluster=0, durations=()):
    """A cluster in the given (ranked) order, its unit rows served from memory."""
    unit = np.asarray(vectors, dtype=np.float32)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    ids = ids or [f"clip-{i:03d}" for i in range(len(unit))]
    return ClusterRows(cluster, pa.array(ids), np.zeros(len(ids), np.float32), lambda s, e: unit[s:e], durations)


def removed_of(table):
    return {row["clip_id"] for row in table.to_pylist() if not row["kept"]}


def on_circle(*degrees):
    return [[math.cos(math.radians(d)), math.sin(math.radians(d)), 0.0] for d in degrees]


@pytest.mark.parametrize(("batch_size", "rows_in_memory"), [(1024, 1 << 20), (1, 1), (2, 3), (3, 2), (1, 4)])
def test_nemo_worked_example(batch_size, rows_in_memory):
    rows = ranked_rows(list(NEMO_EXAMPLE.values()), list(NEMO_EXAMPLE))
    index, score = earlier_best_match(rows.read, 5, batch_size, rows_in_memory)
    assert index.tolist() == [0, 0, 1, 0, 2]  # A->A (first), B->A, C->B, D->A (a tie at 0: the earliest), E->C
    assert np.allclose(score, [0.0, 0.96, 0.28, 0.0, 0.96], atol=1e-6)
    settings = DedupSettings(eps=0.1, pairwise_batch_size=batch_size, memory_mb=16)
    table = nemo_decisions(rows, settings, dim=4)
    assert [(r["clip_id"], r["max_id"], r["kept"]) for r in table.to_pylist()] == [
        ("A", "A", True),
        ("B", "A", False),
        ("C", "B", True),
        ("D", "A", True),
        ("E", "C", False),
    ]


def test_an_earlier_clip_stays_eligible_when_removed_and_nothing_chains():
    # a~c and b~c (8 degrees, cos 0.990), a!~b (16 degrees, cos 0.961); eps 0.02 -> threshold 0.98.
    a, c, b = on_circle(0, 8, 16)
    settings = DedupSettings(eps=0.02)
    # c ranked last (as "hard" ranks it: it is the closest to their centroid): only c goes, matched to a.
    table = nemo_decisions(ranked_rows([a, b, c], ["a", "b", "c"]), settings, 3)
    assert removed_of(table) == {"c"} and table.to_pylist()[2]["max_id"] == "a"
    # c ranked first (as "easy" ranks it): a and b each match c and both go.
    assert removed_of(nemo_decisions(ranked_rows([c, a, b], ["c", "a", "b"]), settings, 3)) == {"a", "b"}
    # The transitive rule joins all three into one group and removes two, whatever the order.
    groups = transitive_groups(ranked_rows([a, b, c], ["a", "b", "c"], durations=[1.0] * 3), settings, 3)
    assert removed_of(groups) == {"b", "c"} and set(groups.column("group_size").to_pylist()) == {3}


def test_a_four_clip_chain():
    # a-b-c-d, 8 degrees apart: neighbours are near-duplicates at eps 0.02, nothing two steps apart is.
    chain = dict(zip("abcd", on_circle(0, 8, 16, 24), strict=True))
    settings = DedupSettings(eps=0.02)
    # NeMo: in chain order, b, c and d each match the clip just before them (removed or not).
    table = nemo_decisions(ranked_rows(list(chain.values()), list(chain)), settings, 3)
    assert [(r["clip_id"], r["max_id"], r["kept"]) for r in table.to_pylist()] == [
        ("a", "a", True),
        ("b", "a", False),
        ("c", "b", False),
        ("d", "c", False),
    ]
    assert all(r["cosine_sim_score"] >= 0.98 for r in table.to_pylist() if not r["kept"])
    # Ends first (as "hard" ranks them: farthest from the centroid): a and d, 24 degrees apart, both stay.
    order = ["d", "a", "c", "b"]
    assert removed_of(nemo_decisions(ranked_rows([chain[k] for k in order], order), settings, 3)) == {"b", "c"}
    # The transitive rule removes d for a although they are 24 degrees (cosine distance 0.086) apart.
    groups = transitive_groups(ranked_rows(list(chain.values()), list(chain), durations=[1.0] * 4), settings, 3)
    far = {r["clip_id"]: r["cosine_distance_to_kept"] for r in groups.to_pylist()}["d"]
    assert removed_of(groups) == {"b", "c", "d"} and far == pytest.approx(1 - math.cos(math.radians(24)), abs=1e-6)


def test_the_transitive_chain_is_one_group_in_every_order():
    """Whatever order the pairs are joined in (every permutation of a 4-clip chain among other clips), the
    chain is one group of four: a union-find that leaves a stale parent splits it."""
    chain = on_circle(0, 8, 16, 24)
    others = on_circle(90, 180, 270)
    settings = DedupSettings(eps=0.02, pairwise_batch_size=2, memory_mb=16)
    for permutation in itertools.permutations(range(4)):
        vectors = [chain[i] for i in permutation] + others
        ids = [f"chain-{i}" for i in permutation] + ["x", "y", "z"]
        groups = transitive_groups(ranked_rows(vectors, ids, durations=[1.0] * 7), settings, 3)
        assert sorted(groups.column("clip_id").to_pylist()) == [f"chain-{i}" for i in range(4)], permutation
        assert set(groups.column("group_size").to_pylist()) == {4}


def test_the_transitive_rule_keeps_the_longest_clip_then_the_smallest_id():
    a, b, c = on_circle(0, 3, 6)
    groups = transitive_groups(ranked_rows([a, b, c], ["a", "b", "c"], durations=[2.0, 9.5, 4.0]), DedupSettings(), 3)
    assert {r["clip_id"]: r["kept"] for r in groups.to_pylist()} == {"a": False, "b": True, "c": False}
    assert set(groups.column("kept_clip_id").to_pylist()) == {"b"}
    tied = transitive_groups(ranked_rows([a, b, c], ["c2", "a2", "b2"], durations=[3.0, 3.0, 3.0]), DedupSettings(), 3)
    assert set(tied.column("kept_clip_id").to_pylist()) == {"a2"}
    unknown = transitive_groups(ranked_rows([a, b], ["a3", "b3"], durations=[None, 1.0]), DedupSettings(), 3)
    assert set(unknown.column("kept_clip_id").to_pylist()) == {"b3"}


def test_ties_match_the_earliest_ranked_clip():
    same = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    for batch_size, rows_in_memory in [(1024, 1024), (1, 1), (2, 2)]:
        index, score = earlier_best_match(ranked_rows(same).read, 5, batch_size, rows_in_memory)
        assert index.tolist() == [0, 0, 0, 0, 0] and score.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_hard_easy_and_random_rankings():
    ids = pa.array(["b", "a", "d", "c", "e"])
    distances = np.array([0.3, 0.3, 0.1, 0.5, 0.1], dtype=np.float32)
    names = ids.to_pylist()

    def ranked(which, seed=42, cluster=0):
        return [names[i] for i in ranking_order(ids, distances, which, seed, cluster)]

    # NeMo sorts by (cosine_dist_to_cent, id), both descending for "hard", both ascending for "easy".
    assert ranked("hard") == ["c", "b", "a", "e", "d"]
    assert ranked("easy") == ["d", "e", "a", "b", "c"]
    shuffled = ranked("random")
    assert sorted(shuffled) == sorted(names) and shuffled == ranked("random")
    assert len({tuple(ranked("random", seed)) for seed in range(20)}) > 5
    assert len({tuple(ranked("random", 42, cluster)) for cluster in range(20)}) > 5
    # The shuffle does not depend on the order the rows arrive in.
    reversed_ids = pa.array(names[::-1])
    again = ranking_order(reversed_ids, distances[::-1].copy(), "random", 42, 0)
    assert [names[::-1][i] for i in again] == shuffled


# The independent reference: everything from first principles, the whole matrix at once.


def reference_decisions(ids, vectors, means, eps, which_to_keep, ranks=None):
    """NeMo's rule over unit `vectors` with the fitted centroid `means`: {clip id: (centroid, distance, max_id,
    score, kept)}. `ranks` ({clip id: rank}) stands in for the ranking where it is random."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    squared = ((unit[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    labels = squared.argmin(axis=1)
    directions = means / np.linalg.norm(means, axis=1, keepdims=True)
    distance = 1 - (unit * directions[labels]).sum(axis=1)
    decisions = {}
    for cluster in sorted(set(labels.tolist())):
        members = [i for i in range(len(ids)) if labels[i] == cluster]
        if ranks is not None:
            members.sort(key=lambda i: ranks[ids[i]])
        else:
            members.sort(key=lambda i: (float(np.float32(distance[i])), ids[i]), reverse=which_to_keep == "hard")
        similarity = unit[members] @ unit[members].T
        for position, i in enumerate(members):
            if position == 0:
                best, score = 0, 0.0
            else:
                earlier = similarity[position, :position]
                best = int(np.flatnonzero(earlier == earlier.max())[0])
                score = float(earlier[best])
            decisions[ids[i]] = (cluster, float(distance[i]), ids[members[best]], score, score < 1 - eps)
    return decisions


def clustered_vectors(count, dim, centres, seed, twins=()):
    """Clips around `centres` random directions (spread like one scene's clips), with `twins` (pairs of
    rows: the second copies the first plus noise far below any threshold)."""
    rng = np.random.default_rng(seed)
    middles = rng.normal(size=(centres, dim))
    vectors = middles[rng.integers(centres, size=count)] + rng.normal(scale=0.35, size=(count, dim))
    for source, copy in twins:
        vectors[copy] = vectors[source] + rng.normal(scale=1e-4, size=dim)
    return vectors.astype(np.float32)


def stored(storage):
    table = pq.read_table(storage.path(layout.near_duplicates_key()))
    state = json.loads(storage.path(layout.near_duplicates_summary_key()).read_bytes())
    means = np.load(storage.path(layout.near_duplicates_centroids_key()))
    return table, state, means


def assert_matches_reference(table, ids, vectors, means, settings):
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == len(ids)
    ranks = {c: r["rank"] for c, r in rows.items()} if settings.which_to_keep == "random" else None
    expected = reference_decisions(ids, vectors, means, settings.eps, settings.which_to_keep, ranks)
    for clip_id, (cluster, distance, max_id, score, kept) in expected.items():
        row = rows[clip_id]
        assert (row["centroid"], row["max_id"], row["kept"]) == (cluster, max_id, kept), clip_id
        assert row["cosine_dist_to_cent"] == pytest.approx(distance, abs=1e-5)
        assert row["cosine_sim_score"] == pytest.approx(score, abs=1e-5)
    return {c for c, d in expected.items() if not d[4]}


@pytest.mark.parametrize("which_to_keep", ["hard", "easy", "random"])
def test_builds_match_the_reference_on_clustered_vectors(tmp_path, which_to_keep):
    storage = LocalStorage(tmp_path)
    twins = [(i, i + 1) for i in range(0, 120, 6)]
    vectors = clustered_vectors(600, 24, centres=9, seed=5, twins=twins)
    ids = [f"clip-{i:04d}" for i in range(600)]
    write_vectors(storage, ids, vectors)
    # Small blocks and a small budget: the bounded paths (several query batches, spilled clusters) are the ones run.
    settings = DedupSettings(eps=0.05, which_to_keep=which_to_keep, n_clusters=4, pairwise_batch_size=16)
    update = update_near_duplicates(storage, settings)
    table, state, means = stored(storage)
    removed = assert_matches_reference(table, ids, vectors, means, settings)
    assert update.grouping.removed_clip_ids == removed and state["duplicates"] == len(removed)
    assert means.shape == (4, 24) and update.build.refit.needed and update.grouping.clusters == 4
    # Every planted twin whose pair share a cluster is decided: exactly one of the two goes.
    by_id = {r["clip_id"]: r for r in table.to_pylist()}
    for source, copy in twins:
        pair = [by_id[ids[source]], by_id[ids[copy]]]
        if pair[0]["centroid"] == pair[1]["centroid"]:
            assert sum(not r["kept"] for r in pair) >= 1
    assert 0 < len(removed) < 600


def test_the_kmeans_path_over_8192_clips(tmp_path):
    """Past 2 x 4,096 clips the default fits k-means (three clusters here); every clip's centroid, distance,
    match and decision then agree with the reference, so no row is mixed up with another cluster's."""
    storage = LocalStorage(tmp_path)
    count = 9_000
    twins = [(i, i + 4_500) for i in range(0, 4_500, 150)]
    vectors = clustered_vectors(count, 24, centres=6, seed=8, twins=twins)
    ids = [f"{(i * 7919) % count:05d}-clip" for i in range(count)]  # ids in another order than the rows
    write_vectors(storage, ids, vectors)
    settings = DedupSettings(eps=1e-4)
    update = update_near_duplicates(storage, settings)
    table, _, means = stored(storage)
    assert update.grouping.clusters == len(means) == 3
    removed = assert_matches_reference(table, ids, vectors, means, settings)
    by_id = {r["clip_id"]: r for r in table.to_pylist()}
    planted = {ids[copy] for source, copy in twins} | {ids[source] for source, copy in twins}
    assert removed <= planted and len(removed) == len(twins)  # nothing but twins is that close, one of each goes
    for source, copy in twins:
        assert by_id[ids[copy]]["centroid"] == by_id[ids[source]]["centroid"]
        assert {by_id[ids[copy]]["max_id"], by_id[ids[source]]["max_id"]} & {ids[source], ids[copy]}


def test_an_update_re_decides_only_the_clusters_that_changed(tmp_path):
    storage = LocalStorage(tmp_path)
    vectors = clustered_vectors(800, 16, centres=8, seed=3, twins=[(i, i + 1) for i in range(0, 100, 5)])
    ids = [f"clip-{i:04d}" for i in range(800)]
    keys = [f"v{i // 100}.mp4" for i in range(800)]
    write_vectors(storage, ids, vectors, keys)
    settings = DedupSettings(eps=0.05, n_clusters=8)
    first = update_near_duplicates(storage, settings)
    before, _, means = stored(storage)
    assert first.build.clusters_decided == 8

    # Nothing changed: nothing is re-decided, the table is the same.
    again = update_near_duplicates(storage, settings)
    assert not again.build.refit.needed and again.build.clusters_decided == 0
    assert stored(storage)[0].equals(before)

    # A new video of 10 clips: twins of clips already there. Only their clusters are re-decided.
    rng = np.random.default_rng(9)
    added = vectors[[400, 410, 420, 430, 440, 450, 460, 470, 480, 490]] + rng.normal(scale=1e-4, size=(10, 16))
    added_ids = [f"new-{i}" for i in range(10)]
    write_vectors(storage, added_ids, added.astype(np.float32), "new.mp4", mode="append")
    update = update_near_duplicates(storage, settings)
    after, _, kept_means = stored(storage)
    assert np.array_equal(kept_means, means) and not update.build.refit.needed
    changed = {r["centroid"] for r in after.to_pylist() if r["clip_id"] in added_ids}
    assert update.build.clusters_decided == len(changed) < 8
    unchanged_before = before.filter(pa.compute.invert(pa.compute.is_in(before["centroid"], pa.array(changed))))
    unchanged_after = after.filter(pa.compute.invert(pa.compute.is_in(after["centroid"], pa.array(changed))))
    assert unchanged_after.equals(unchanged_before)
    all_ids, all_vectors = ids + added_ids, np.concatenate([vectors, added.astype(np.float32)])
    assert_matches_reference(after, all_ids, all_vectors, means, settings)  # the same as deciding everything anew
    removed = {r["clip_id"] for r in after.to_pylist() if not r["kept"]}
    assert all({ids[400 + 10 * i], f"new-{i}"} & removed for i in range(10))  # one of each new pair at least

    # A new eps re-decides every cluster with the kept centroids; n_clusters changed fits anew.
    looser = update_near_duplicates(storage, DedupSettings(eps=0.2, n_clusters=8))
    assert not looser.build.refit.needed and looser.build.clusters_decided == 8
    refitted = update_near_duplicates(storage, DedupSettings(eps=0.2, n_clusters=5))
    assert refitted.build.refit.needed and "n_clusters" in refitted.build.refit.reason
    assert stored(storage)[2].shape == (5, 16)


def test_the_dataset_growing_past_the_refit_factor_fits_anew(tmp_path):
    storage = LocalStorage(tmp_path)
    vectors = clustered_vectors(300, 8, centres=3, seed=4)
    write_vectors(storage, [f"a{i}" for i in range(100)], vectors[:100])
    assert update_near_duplicates(storage).build.refit.needed
    write_vectors(storage, [f"b{i}" for i in range(50)], vectors[100:150], "b.mp4", mode="append")
    assert not update_near_duplicates(storage).build.refit.needed  # 150 clips: within twice the 100 fitted
    write_vectors(storage, [f"c{i}" for i in range(150)], vectors[150:], "c.mp4", mode="append")
    grown = update_near_duplicates(storage)
    assert grown.build.refit.needed and "100 to 300" in grown.build.refit.reason
    assert update_near_duplicates(storage, refit=True).build.refit.reason == "asked for (refit)"


def test_the_transitive_option_reads_durations_from_the_clip_index(tmp_path):
    storage = LocalStorage(tmp_path)
    a, b, c = on_circle(0, 3, 6)
    d = on_circle(120)[0]
    write_vectors(storage, ["a", "b", "c", "d"], np.array([a, b, c, d], np.float32), durations=[2.0, 4.0, 9.0, 1.0])
    update = update_near_duplicates(storage, DedupSettings(rule="transitive", eps=0.02))
    rows = pq.read_table(storage.path(layout.near_duplicates_key())).to_pylist()
    assert {r["clip_id"]: r["kept"] for r in rows} == {"a": False, "b": False, "c": True}
    assert update.grouping.group_count == 1 and update.grouping.duplicates == 2


def test_memory_stays_bounded_by_the_setting(tmp_path):
    """A cluster larger than the budget is compared block by block from the spill file, with the same result."""
    storage = LocalStorage(tmp_path)
    vectors = clustered_vectors(3_000, 256, centres=2, seed=6, twins=[(i, i + 1) for i in range(0, 300, 10)])
    ids = [f"clip-{i:04d}" for i in range(3_000)]
    write_vectors(storage, ids, vectors)
    small = DedupSettings(eps=0.05, n_clusters=1, memory_mb=16)
    assert small.rows_in_memory(256) == 1024  # the one cluster does not fit: it is read 1,024 rows at a time
    update_near_duplicates(storage, small)
    table, _, means = stored(storage)
    assert_matches_reference(table, ids, vectors, means, small)


def test_several_fragments_with_deleted_rows(tmp_path):
    """Appends make fragments and a replaced video leaves deletion files: the build reads the live rows of
    each fragment, in the scan for the centroids and in the spill alike, and an update sees the deletions."""
    storage = LocalStorage(tmp_path)
    vectors = clustered_vectors(900, 16, centres=4, seed=12, twins=[(i, i + 300) for i in range(0, 300, 25)])
    ids = [f"clip-{i:04d}" for i in range(900)]
    for part in range(3):
        rows = slice(300 * part, 300 * (part + 1))
        write_vectors(storage, ids[rows], vectors[rows], f"v{part}.mp4", mode="create" if part == 0 else "append")
    table = table_location(storage, layout.clip_vectors_key("cosmos-embed1")).latest()
    gone = {ids[i] for i in range(0, 900, 7)}
    table.delete("clip_id IN (" + ", ".join(f"'{c}'" for c in sorted(gone)) + ")")
    assert len(table.get_fragments()) == 3
    live = [i for i in range(900) if ids[i] not in gone]
    settings = DedupSettings(eps=0.05, n_clusters=3, pairwise_batch_size=32)
    update_near_duplicates(storage, settings)
    decisions, _, means = stored(storage)
    assert_matches_reference(decisions, [ids[i] for i in live], vectors[live], means, settings)
    # One more deletion: the update re-decides the clusters that lost a clip, and still agrees.
    table_location(storage, layout.clip_vectors_key("cosmos-embed1")).latest().delete(f"clip_id = '{ids[live[-1]]}'")
    update = update_near_duplicates(storage, settings)
    decisions, _, _ = stored(storage)
    assert not update.build.refit.needed and update.build.clusters_decided == 1
    assert_matches_reference(decisions, [ids[i] for i in live[:-1]], vectors[live[:-1]], means, settings)
