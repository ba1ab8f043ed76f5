"""Embeddings per model: every vector names its model and version, models live side by side, and a dataset
moving to another model builds that model's vectors and deletes nothing.

Three videos whose clips carry vectors of two algorithms (as NeMo's clips carry Cosmos-Embed1 and
InternVideo2 vectors), with a different planted twin under each: `nearest` finds the twin of the model
asked for. Real files through real Dagster runs; the dataset's configuration changes between runs.
"""

import io
import json
import tarfile

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import ClipIndexError, EmbeddingModel
from clip_assets.dataset.outputs import read_partition_outputs
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.tables import EmbeddingModelError, verify_vectors
from clip_assets.dataset.update import commit_partitions
from clip_assets.engine.removal import remove_partition
from clip_assets.families import FAMILIES
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.curated import materialize_exports
from clip_assets_tests.support.dataset import (
    materialization_metadata,
    materialize_dataset_tables,
    materialize_near_duplicates,
    materialize_summary,
    synthetic_outputs,
)
from clip_assets_tests.support.factories import make_clips, write_video

COSMOS, INTERN = "cosmos-embed1", "internvideo2"
DIMS = {COSMOS: 32, INTERN: 16}


def two_model_videos(inbox):
    """a, b and c, three passed clips each, vectors of both models; b[1] is a[0]'s twin under Cosmos-Embed1,
    c[2] under InternVideo2 (each model's other vectors independent)."""
    rng = np.random.default_rng(11)
    videos = {}
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        clips = make_clips(3, source_video=f"/videos/{name}")
        for clip in clips:
            clip.embeddings = {model: rng.normal(size=dim).astype(np.float32) for model, dim in DIMS.items()}
        videos[name] = clips
    a, b, c = videos["a.mp4"], videos["b.mp4"], videos["c.mp4"]
    b[1].embeddings[COSMOS] = a[0].embeddings[COSMOS] + rng.normal(scale=1e-3, size=DIMS[COSMOS]).astype(np.float32)
    c[2].embeddings[INTERN] = a[0].embeddings[INTERN] + rng.normal(scale=1e-3, size=DIMS[INTERN]).astype(np.float32)
    for name, clips in videos.items():
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")
    return videos


def curate(instance, inbox, output, run_partition, **settings):
    """Every video's families, then its rows, with the dataset configured as `settings` say."""
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert run_partition(name, **settings).success
        result = materialize_dataset_tables(instance, name, str(inbox), str(output), **settings)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    return result


def test_a_second_model_lives_beside_the_first_and_changing_the_model_deletes_nothing(
    inbox, output, instance, run_partition
):
    videos = two_model_videos(inbox)
    a, b, c = videos["a.mp4"], videos["b.mp4"], videos["c.mp4"]
    curate(instance, inbox, output, run_partition, embedding_algorithm=COSMOS)
    dataset = open_dataset(str(output))
    assert dataset.nearest(a[0].uuid, 1)[0][0] == b[1].uuid  # the only model: no need to name it

    # The dataset moves to InternVideo2, version 2.0: the families write iv2_* and the index follows.
    result = curate(instance, inbox, output, run_partition, embedding_algorithm=INTERN, embedding_version="2.0")
    parquet = pq.read_table(next((output / "iv2_embd_parquet").glob("*.parquet")))
    assert parquet.schema.metadata[b"clip_assets.embedding_model"] == b"internvideo2"
    assert parquet.schema.metadata[b"clip_assets.embedding_version"] == b"2.0"
    models = json.loads((output / layout.embedding_models_key()).read_text())
    assert models["configured"] == {"model": INTERN, "version": "2.0"}
    assert [(m["model"], m["version"], m["dim"], m["table"]) for m in models["models"]] == [
        (COSMOS, "", 32, "dataset/clip_vectors/cosmos-embed1.lance"),
        (INTERN, "2.0", 16, "dataset/clip_vectors/internvideo2.2.0.lance"),
    ]
    counts = {path.name: lance.dataset(str(path)).count_rows() for path in (output / "dataset/clip_vectors").iterdir()}
    assert counts == {"cosmos-embed1.lance": 9, "internvideo2.2.0.lance": 9}  # the first model's vectors stay
    assert materialization_metadata(result, "clip_vectors")["dagster/row_count"] == 18

    rows = {row[ci.CLIP_ID]: row for row in dataset.clips().to_pylist()}
    clips = {clip.uuid: clip for clip in a + b + c}
    for clip_id, row in rows.items():  # each row's vector is what its files hold now, named by its model
        assert (row[ci.EMBEDDING_MODEL], row[ci.EMBEDDING_VERSION]) == (INTERN, "2.0")
        np.testing.assert_array_equal(np.float32(row[ci.EMBEDDING]), clips[clip_id].embeddings[INTERN])
    stored = dataset.query(
        "SELECT embedding_model, embedding_version, count(*) AS n, max(len(embedding)) AS dim FROM vectors "
        "GROUP BY ALL ORDER BY 1"
    ).to_pylist()
    assert stored == [
        {"embedding_model": COSMOS, "embedding_version": "", "n": 9, "dim": 32},
        {"embedding_model": INTERN, "embedding_version": "2.0", "n": 9, "dim": 16},
    ]
    # nearest: the configured model by default, any other by name.
    assert dataset.nearest(a[0].uuid, 1)[0][0] == c[2].uuid
    assert dataset.nearest(a[0].uuid, 1, model=COSMOS)[0][0] == b[1].uuid
    np.testing.assert_array_equal(dataset.vector(a[0].uuid, model=COSMOS), a[0].embeddings[COSMOS])
    with pytest.raises(EmbeddingModelError, match=r"'clip-4': no vectors of it \(the dataset's models: "):
        dataset.nearest(a[0].uuid, 1, model="clip-4")
    assert verify_vectors(LocalStorage(output)).passed

    # The near-duplicates, the shards and their samples name the model they used.
    settings = {"embedding_algorithm": INTERN, "embedding_version": "2.0"}
    assert materialize_near_duplicates(instance, str(inbox), str(output), **settings).success
    figures = json.loads((output / layout.near_duplicates_summary_key()).read_text())
    assert (figures["embedding_model"], figures["embedding_version"], figures["clips"]) == (INTERN, "2.0", 9)
    assert materialize_exports(instance, inbox, str(output), shard_bytes=1 << 20, page_size=3, **settings).success
    index = json.loads((output / layout.training_shards_index_key()).read_text())
    assert (index["embedding_model"], index["embedding_version"]) == (INTERN, "2.0")
    for tar in (output / layout.TRAINING_SHARDS).glob("*.tar"):
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                data = archive.extractfile(member).read()
                if member.name.endswith(".json"):
                    document = json.loads(data)
                    assert (document[ci.EMBEDDING_MODEL], document[ci.EMBEDDING_VERSION]) == (INTERN, "2.0")
                elif member.name.endswith(".npy"):
                    expected = clips[member.name.split(".")[0]].embeddings[INTERN]
                    np.testing.assert_array_equal(np.load(io.BytesIO(data)), expected)

    summary = materialize_summary(instance, str(inbox), str(output))
    assert summary.success
    tables = json.loads((output / layout.dataset_summary_key()).read_text())["dataset_tables"]
    assert tables["vectors_by_model"] == {COSMOS: 9, f"{INTERN} 2.0": 9} and tables["clip_vectors"] == 18

    # A removed video leaves no vector of any model.
    remove_partition(LocalStorage(output), "b.mp4", FAMILIES)
    instance.delete_dynamic_partition("processed_videos", "b.mp4")
    assert materialize_dataset_tables(instance, "a.mp4", str(inbox), str(output), **settings).success
    assert dataset.query("SELECT embedding_model, count(*) AS n FROM vectors GROUP BY 1 ORDER BY 1").to_pylist() == [
        {"embedding_model": COSMOS, "n": 6},
        {"embedding_model": INTERN, "n": 6},
    ]


def test_several_models_and_none_configured_must_be_named(tmp_path):
    storage = LocalStorage(tmp_path)
    rng = np.random.default_rng(2)
    first = synthetic_outputs(storage.root, "v.mp4", rng.normal(size=(3, 8)).astype(np.float32))
    commit_partitions(storage, {"v.mp4": first})
    second = synthetic_outputs(storage.root, "w.mp4", rng.normal(size=(3, 4)).astype(np.float32), first_clip=10)
    second.models = {key: EmbeddingModel("color-grid-4x4-v1") for _, key in second.vectors.values()}
    commit_partitions(storage, {"w.mp4": second})
    dataset = open_dataset(str(tmp_path))
    with pytest.raises(EmbeddingModelError, match=r"a model: several match: name one \(the dataset's models: "):
        dataset.nearest(str(next(iter(first.vectors))), 2)
    some_clip = sorted(first.vectors)[0]
    assert len(dataset.nearest(some_clip, 2, model=COSMOS)) == 2
    assert dataset.nearest(sorted(second.vectors)[0], 5, model="color-grid-4x4-v1")[0][0] in second.vectors


def test_a_model_name_that_cannot_name_a_table_is_refused_naming_its_file(inbox, output, run_partition):
    write_video(inbox / "v.mp4.parquet", source_video="/videos/v.mp4", num_clips=2)
    assert run_partition("v.mp4").success
    (path,) = (output / "ce1_embd_parquet").glob("*.parquet")
    table = pq.read_table(path)
    metadata = {**table.schema.metadata, b"clip_assets.embedding_model": b"../../elsewhere"}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(ClipIndexError, match=rf"^{output}/ce1_embd_parquet/{path.name}: schema metadata"):
        read_partition_outputs(LocalStorage(output), "v.mp4")


def test_an_index_of_the_one_model_format_is_migrated_once(tmp_path):
    """What clip-assets wrote before models had tables of their own: a fixed-size `embedding`, no model
    columns, one vector table at dataset/clip_vectors.lance."""
    storage = LocalStorage(tmp_path)
    vectors = np.random.default_rng(4).normal(size=(4, 8)).astype(np.float32)
    outputs = synthetic_outputs(storage.root, "v.mp4", vectors, filtered_every=4)
    rows = ci.clip_rows(outputs).drop_columns([ci.EMBEDDING_MODEL, ci.EMBEDDING_VERSION])
    pickles = [layout.embedding_pickle_key(COSMOS, clip_id) for clip_id in rows.column(ci.CLIP_ID).to_pylist()]
    rows = rows.set_column(rows.schema.get_field_index(ci.EMBEDDING_KEY), ci.EMBEDDING_KEY, [pickles])
    old = rows.column(ci.EMBEDDING).combine_chunks()
    fixed = pa.FixedSizeListArray.from_arrays(
        pa.array(np.concatenate([v.values.to_numpy() if v.is_valid else np.zeros(8, np.float32) for v in old])),
        8,
        mask=old.is_null(),
    )
    rows = rows.set_column(rows.schema.get_field_index(ci.EMBEDDING), ci.EMBEDDING, fixed)
    lance.write_dataset(rows, str(tmp_path / layout.clip_index_key()))
    passed = rows.filter(rows.column(ci.PASSED))
    lance.write_dataset(
        passed.select([ci.CLIP_ID, ci.PARTITION_KEY, ci.EMBEDDING]), str(tmp_path / "dataset/clip_vectors.lance")
    )

    update = commit_partitions(storage, {"v.mp4": outputs})
    assert update.index.rows == 4 and update.vectors.rows == 3
    assert not (tmp_path / "dataset/clip_vectors.lance").exists()
    index = lance.dataset(str(tmp_path / layout.clip_index_key())).to_table()
    assert index.schema == ci.clip_index_schema()
    assert index.filter(index.column(ci.PASSED)).column(ci.EMBEDDING_MODEL).to_pylist() == [COSMOS] * 3
    dataset = open_dataset(str(tmp_path))
    clip_ids = sorted(outputs.vectors)
    np.testing.assert_array_equal(dataset.vector(clip_ids[0]), outputs.vectors[clip_ids[0]][0])
    assert verify_vectors(storage).passed
