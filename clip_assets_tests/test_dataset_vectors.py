"""The vector table's cosine index and concurrent updates, at sizes where real media would dominate.

The partitions' outputs are synthetic (`synthetic_outputs`: the documents, manifest entries and
vectors the families would have written); the Lance tables, the index and the locks are real.
"""

import threading
import uuid

import numpy as np
import pyarrow as pa

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.tables import replace_partitions, table_location
from clip_assets.dataset.update import commit_partitions
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import synthetic_outputs

DIM = 32


def clip_id(number):
    return str(uuid.UUID(int=number))


def test_index_is_trained_then_kept_current(tmp_path):
    storage = LocalStorage(tmp_path)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(600, DIM)).astype(np.float32)
    videos = {
        f"v{i}.mp4": synthetic_outputs(storage.root, f"v{i}.mp4", base[i * 100 : (i + 1) * 100], first_clip=i * 100)
        for i in range(6)
    }
    first = commit_partitions(storage, videos, min_indexed_rows=500)
    assert first.vector_index == "trained IVF_PQ on 600 vectors"
    vectors = open_dataset(str(tmp_path))._table(layout.clip_vectors_key("cosmos-embed1"))
    (index,) = vectors.describe_indices()
    assert index.field_names == [ci.EMBEDDING]

    twin = base[123] + rng.normal(scale=1e-3, size=DIM).astype(np.float32)
    planted = synthetic_outputs(storage.root, "w.mp4", twin[None], first_clip=10_000)
    added = commit_partitions(storage, {"w.mp4": planted}, min_indexed_rows=500)
    assert added.vector_index.startswith("optimized") and added.vectors.rows == 601
    dataset = open_dataset(str(tmp_path))
    assert dataset.nearest(clip_id(10_000), 5)[0][0] == clip_id(123)
    assert dataset.nearest(clip_id(123), 1)[0][0] == clip_id(10_000)
    # Through the index, the 10 nearest agree with an exact search on most queries' top hits.
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    hits = 0
    for query in range(0, 600, 60):
        exact = [clip_id(int(i)) for i in np.argsort(-(unit @ unit[query]))[1:11] if int(i) != 123]
        found = [c for c, _ in dataset.nearest(clip_id(query), 10) if c != clip_id(10_000)]
        hits += len(set(found) & set(exact[: len(found)]))
    assert hits >= 80  # of about 100: recall@10 of at least 0.8 through IVF_PQ with refinement

    removed = commit_partitions(storage, {"v1.mp4": None}, min_indexed_rows=500)
    assert removed.removed == ("v1.mp4",) and removed.vectors.rows == 501 and removed.index.deleted == 100
    assert not dataset.query("SELECT clip_id FROM vectors WHERE partition_key = 'v1.mp4'").num_rows


def test_concurrent_updates_of_different_videos_all_land(tmp_path):
    storage = LocalStorage(tmp_path)
    rng = np.random.default_rng(3)
    errors = []

    def update(worker):
        try:
            for round_ in range(5):
                key = f"w{worker}-{round_}.mp4"
                vectors = rng.normal(size=(4, DIM)).astype(np.float32)
                outputs = synthetic_outputs(storage.root, key, vectors, first_clip=1000 * worker + 10 * round_)
                commit_partitions(LocalStorage(tmp_path), {key: outputs})
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=update, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    dataset = open_dataset(str(tmp_path))
    counts = dataset.query("SELECT partition_key, count(*) AS n FROM clips GROUP BY 1").to_pylist()
    assert sorted(r["partition_key"] for r in counts) == sorted(f"w{w}-{r}.mp4" for w in range(3) for r in range(5))
    assert {r["n"] for r in counts} == {4}
    assert dataset.query("SELECT count(*) AS n FROM vectors").to_pylist() == [{"n": 60}]


def test_unchanged_outputs_commit_nothing_and_many_fragments_are_compacted(tmp_path):
    storage = LocalStorage(tmp_path)
    rng = np.random.default_rng(5)
    location = table_location(storage, "dataset/clip_index.lance")
    videos = {}
    compacted = []
    for number in range(5):
        key = f"v{number}.mp4"
        videos[key] = ci.clip_rows(
            synthetic_outputs(storage.root, key, rng.normal(size=(3, DIM)).astype(np.float32), first_clip=10 * number),
        )
        update = replace_partitions(location, [key], videos[key], max_fragments=3)
        compacted.append(update.compacted)
    # The fourth video's fragment made four: compacted into one, which the fifth joined.
    assert compacted == [False, False, False, True, False]
    assert update.fragments == 2 and update.rows == 15
    before = location.latest()
    again = replace_partitions(location, ["v2.mp4"], videos["v2.mp4"], max_fragments=3)
    assert (again.inserted, again.updated, again.deleted, again.version) == (0, 0, 0, before.version)
    table = location.latest().to_table()
    expected = pa.concat_tables(videos.values())
    assert table.sort_by(ci.CLIP_ID).equals(expected.sort_by(ci.CLIP_ID))
