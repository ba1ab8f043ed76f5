"""The clip index, the vector table and the near-duplicates, from real outputs through real Dagster runs.

Three videos with distinct random embeddings, and two planted near-duplicate pairs across videos
(a clip's vector plus noise far below the threshold): the index agrees with the tree file by file,
`nearest` finds each twin first, the grouping holds exactly the planted pairs, a changed video
rewrites only its own rows, and a removed one leaves nothing behind.
"""

import hashlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from dagster import AssetCheckKey, AssetKey, AssetSelection, materialize

from clip_assets import layout
from clip_assets.cli import main
from clip_assets.components.curated_dataset import CuratedDataset
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.tables import verify_vectors
from clip_assets.dataset.update import read_locked, verify_index
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import (
    FAMILY_ASSETS,
    build_resources,
    dataset_tables,
    materialization_metadata,
    materialize_dataset_tables,
    materialize_near_duplicates,
    materialize_partition,
    materialize_summary,
    output_checks,
    processed_videos,
    write_vectors,
)
from clip_assets_tests.support.factories import clips_with_vectors, write_video

ALGORITHM = "cosmos-embed1"


def vector_of(clip):
    return clip.embeddings[ALGORITHM]


def build_three_videos(inbox):
    a = clips_with_vectors("/videos/a.mp4", 4, seed=1, filtered=[3])
    b = clips_with_vectors("/videos/b.mp4", 3, seed=2, twins={1: vector_of(a[0])})
    c = clips_with_vectors("/videos/c.mp4", 3, seed=3, twins={2: vector_of(a[2])})
    for name, clips in (("a", a), ("b", b), ("c", c)):
        write_video(inbox / f"{name}.mp4.parquet", clips, source_video=f"/videos/{name}.mp4")
    return {"a.mp4": a, "b.mp4": b, "c.mp4": c}


def curate(inbox, output, instance, run_partition, keys):
    for key in keys:
        assert run_partition(key).success
        result = materialize_dataset_tables(instance, key, str(inbox), str(output))
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {"matches_outputs", "matches_index"}
        assert all(c.passed for c in checks), [c.description for c in checks]
    return result


def test_index_agrees_with_the_tree(inbox, output, instance, run_partition):
    videos = build_three_videos(inbox)
    result = curate(inbox, output, instance, run_partition, sorted(videos))
    assert materialization_metadata(result, "clip_index")["dagster/row_count"] == 10
    assert materialization_metadata(result, "clip_vectors")["dagster/row_count"] == 9

    dataset = open_dataset(str(output))
    assert dataset.shards() == [] and dataset.near_duplicates() is None  # neither was materialized
    clips = {row[ci.CLIP_ID]: row for row in dataset.clips().to_pylist()}
    documents = {p.stem: json.loads(p.read_text()) for p in (output / "metas/v0").glob("*.json")}
    assert sorted(clips) == sorted(documents)
    parquet_vectors = {}
    for path in output.glob("ce1_embd_parquet/*.parquet"):
        table = pq.read_table(path)
        parquet_vectors.update(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist(), strict=True))
    for clip_id, row in clips.items():
        document = documents[clip_id]
        assert row[ci.SOURCE_VIDEO] == document["source_video"]
        assert [row[ci.SPAN_START], row[ci.SPAN_END]] == document["duration_span"]
        mp4 = (output / row[ci.MP4_KEY]).read_bytes()
        assert (row[ci.MP4_BYTES], row[ci.MP4_SHA256]) == (len(mp4), hashlib.sha256(mp4).hexdigest())
        assert (
            row[ci.MP4_URI] == f"{output}/{row[ci.MP4_KEY]}"
            and row[ci.METADATA_URI] == f"{output}/metas/v0/{clip_id}.json"
        )
        assert (row[ci.WIDTH], row[ci.HEIGHT], row[ci.NUM_FRAMES], row[ci.VIDEO_CODEC]) == (64, 48, 8, "h264")
        captions = [
            (w["start_frame"], w["end_frame"], k.removesuffix("_caption"), v)
            for w in document["windows"]
            for k, v in w.items()
            if k.endswith("_caption") and not k.endswith("_enhanced_caption")
        ]
        assert [(c["start_frame"], c["end_frame"], c["model"], c["text"]) for c in row[ci.CAPTIONS]] == captions
        if row[ci.PASSED]:
            assert row[ci.ENHANCED_CAPTIONS][0]["model"] == "qwen_lm"
            assert all((output / key).is_file() for key in row[ci.PREVIEW_KEYS]) and len(row[ci.PREVIEW_KEYS]) == 2
            np.testing.assert_array_equal(np.float32(row[ci.EMBEDDING]), np.float32(parquet_vectors[clip_id]))
            assert row[ci.AESTHETIC_SCORE] == 4.25 and row[ci.FILTERED_BY] is None
        else:
            assert row[ci.MP4_KEY].startswith("filtered_clips/") and row[ci.FILTERED_BY] == "motion"
            assert row[ci.EMBEDDING] is None and row[ci.PREVIEW_KEYS] == []

    counted = dataset.query(
        "SELECT partition_key, count(*) AS clips, count(*) FILTER (WHERE passed) AS passed "
        "FROM clips GROUP BY partition_key ORDER BY partition_key"
    ).to_pylist()
    assert counted == [
        {"partition_key": "a.mp4", "clips": 4, "passed": 3},
        {"partition_key": "b.mp4", "clips": 3, "passed": 3},
        {"partition_key": "c.mp4", "clips": 3, "passed": 3},
    ]
    second = dataset.query(
        "SELECT clip_id FROM clips WHERE len(list_filter(captions, lambda c: c.text LIKE 'clip 2 %')) > 0"
    )
    assert second.num_rows == 3  # row 2 of each video is captioned "clip 2 ..."

    a, b, c = videos["a.mp4"], videos["b.mp4"], videos["c.mp4"]
    for clip, twin in ((a[0], b[1]), (b[1], a[0]), (a[2], c[2]), (c[2], a[2])):
        nearest = dataset.nearest(clip.uuid, 3)
        assert nearest[0][0] == twin.uuid and nearest[0][1] < 1e-4
        assert clip.uuid not in [n for n, _ in nearest] and nearest[1][1] > 0.1


def test_near_duplicates_group_every_planted_pair(inbox, output, instance, run_partition):
    videos = build_three_videos(inbox)
    curate(inbox, output, instance, run_partition, sorted(videos))
    a, b, c = videos["a.mp4"], videos["b.mp4"], videos["c.mp4"]
    # The default, NeMo's rule: a row per clip compared; one clip of each planted pair goes, matched to the other.
    result = materialize_near_duplicates(instance, str(inbox), str(output))
    assert result.success
    metadata = materialization_metadata(result, "near_duplicates")
    assert (metadata["groups"], metadata["duplicates"], metadata["clips_compared"]) == (2, 2, 9)
    assert abs(metadata["duplicate_rate"] - 2 / 9) < 1e-6
    rows = open_dataset(str(output)).near_duplicates().to_pylist()
    passed = {clip.uuid for clip in a + b + c if not clip.filtered}
    assert {row["clip_id"] for row in rows} == passed and len(rows) == 9
    pairs = [{a[0].uuid, b[1].uuid}, {a[2].uuid, c[2].uuid}]
    removed = {row["clip_id"]: row for row in rows if not row["kept"]}
    assert sorted(map(sorted, pairs)) == sorted(sorted({clip_id, row["max_id"]}) for clip_id, row in removed.items())
    assert all(row["cosine_sim_score"] > 0.999 for row in removed.values())
    histogram = (
        open_dataset(str(output))
        .query(  # docs/dataset.md's query for choosing eps
            "SELECT round(cosine_sim_score, 2) AS similarity, count(*) AS clips "
            "FROM near_duplicates GROUP BY 1 ORDER BY 1 DESC"
        )
        .to_pylist()
    )
    assert histogram[0] == {"similarity": 1.0, "clips": 2} and sum(h["clips"] for h in histogram) == 9
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "duplicate_rate_steady"

    # The transitive option writes the groups, a row per member, the longest clip kept.
    transitive = materialize_near_duplicates(instance, str(inbox), str(output), rule="transitive")
    metadata = materialization_metadata(transitive, "near_duplicates")
    assert (metadata["groups"], metadata["duplicates"], metadata["clips_compared"]) == (2, 2, 9)
    assert abs(metadata["duplicate_rate"] - 2 / 9) < 1e-6
    groups = open_dataset(str(output)).near_duplicates().to_pylist()
    members = {}
    for row in groups:
        members.setdefault(row["group_id"], set()).add(row["clip_id"])
    assert sorted(map(sorted, members.values())) == sorted(
        [sorted([a[0].uuid, b[1].uuid]), sorted([a[2].uuid, c[2].uuid])]
    )
    for row in groups:  # equal durations: the smallest clip id is kept
        assert row["kept_clip_id"] == min(members[row["group_id"]]) and row["kept"] == (
            row["clip_id"] == row["kept_clip_id"]
        )
    (check,) = transitive.get_asset_check_evaluations()
    assert check.passed and check.check_name == "duplicate_rate_steady"

    # Planting a third copy of a[0] in a new video raises the rate by well over five points: the check warns.
    d = clips_with_vectors("/videos/d.mp4", 1, seed=4, twins={0: vector_of(a[0])})
    write_video(inbox / "d.mp4.parquet", d, source_video="/videos/d.mp4")
    curate(inbox, output, instance, run_partition, ["d.mp4"])
    again = materialize_near_duplicates(instance, str(inbox), str(output))
    (check,) = again.get_asset_check_evaluations()
    assert not check.passed and check.severity.value == "WARN"
    assert materialization_metadata(again, "near_duplicates")["duplicates"] == 3
    # The warning stays on the next run (as automation re-materializes the asset) until a run fixes it or a
    # curator accepts the new rate.
    still = materialize_near_duplicates(instance, str(inbox), str(output))
    (check,) = still.get_asset_check_evaluations()
    assert not check.passed and check.severity.value == "WARN"
    accepted = materialize_near_duplicates(instance, str(inbox), str(output), accept_rate=True)
    assert all(check.passed for check in accepted.get_asset_check_evaluations())
    (check,) = materialize_near_duplicates(instance, str(inbox), str(output)).get_asset_check_evaluations()
    assert check.passed
    # A threshold below the planted noise finds nothing.
    tight = materialize_near_duplicates(instance, str(inbox), str(output), eps=1e-9)
    assert materialization_metadata(tight, "near_duplicates")["groups"] == 0
    tight = materialize_near_duplicates(instance, str(inbox), str(output), eps=1e-9, rule="transitive")
    assert materialization_metadata(tight, "near_duplicates")["groups"] == 0

    # The dataset summary carries the tables' figures.
    summary = materialize_summary(instance, str(inbox), str(output))
    assert materialization_metadata(summary, "dataset_summary")["clip_index_rows"] == 11
    figures = json.loads((output / "_clip_assets/dataset_summary.json").read_text())["dataset_tables"]
    index_figures = ("clip_index_rows", "clip_index_passed", "clip_vectors", "near_duplicate_groups", "duplicate_rate")
    assert {name: figures[name] for name in index_figures} == {
        "clip_index_rows": 11,
        "clip_index_passed": 10,
        "clip_vectors": 10,
        "near_duplicate_groups": 0,
        "duplicate_rate": 0.0,
    }


def row_addresses(dataset, partition_key):
    table = dataset._table("dataset/clip_index.lance").to_table(
        columns=[ci.CLIP_ID], filter=f"partition_key = '{partition_key}'", with_row_address=True
    )
    return dict(zip(table.column(ci.CLIP_ID).to_pylist(), table.column("_rowaddr").to_pylist(), strict=True))


def test_a_changed_video_rewrites_only_its_rows(inbox, output, instance, run_partition):
    videos = build_three_videos(inbox)
    curate(inbox, output, instance, run_partition, sorted(videos))
    dataset = open_dataset(str(output))
    before = {key: row_addresses(dataset, key) for key in videos}

    changed = videos["b.mp4"][:2]
    changed[0].windows[0].captions = {"qwen": "a cyclist crosses"}
    write_video(inbox / "b.mp4.parquet", changed, source_video="/videos/b.mp4")
    result = curate(inbox, output, instance, run_partition, ["b.mp4"])
    assert materialization_metadata(result, "clip_index")["rows_deleted"] == 1

    assert row_addresses(dataset, "a.mp4") == before["a.mp4"] and row_addresses(dataset, "c.mp4") == before["c.mp4"]
    rows = dataset.clips(filter="partition_key = 'b.mp4'").to_pylist()
    assert sorted(r[ci.CLIP_ID] for r in rows) == sorted(c.uuid for c in changed)
    assert dataset.query("SELECT caption FROM clips WHERE caption LIKE '%cyclist%'").to_pylist() == [
        {"caption": "a cyclist crosses"}
    ]
    assert dataset.clips().num_rows == 9 and dataset.query("SELECT count(*) AS n FROM vectors").to_pylist() == [
        {"n": 8}
    ]


def test_a_removed_video_leaves_nothing(inbox, output, instance, run_partition, monkeypatch, tmp_path):
    videos = build_three_videos(inbox)
    curate(inbox, output, instance, run_partition, sorted(videos))
    removed = {c.uuid for c in videos["b.mp4"]}
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)  # the command records in the test's instance
    outcome = CliRunner().invoke(main, ["remove", "b.mp4", "--output", str(output)])
    assert outcome.exit_code == 0, outcome.output
    assert "removed      3 files of clip_files" in outcome.output
    assert "b.mp4" not in instance.get_dynamic_partitions("processed_videos")
    on_disk = {p.relative_to(output).as_posix() for p in output.rglob("*")}  # files and folders
    assert not [key for key in on_disk if any(clip_id in key for clip_id in removed)]
    # Its bookkeeping goes too: the clip claims (named by clip id, above), the intent and failure records.
    assert not {layout.intent_key("b.mp4"), layout.video_error_key("b.mp4")} & on_disk
    assert not [key for key in on_disk if "/b.mp4" in key or key.startswith("processed_clip_chunks/b.mp4")]

    dataset = open_dataset(str(output))
    assert not removed & set(dataset.clips().column(ci.CLIP_ID).to_pylist())
    assert dataset.query("SELECT count(*) AS n FROM vectors WHERE partition_key = 'b.mp4'").to_pylist() == [{"n": 0}]
    # Re-materializing another partition keeps it so, and the checks agree with the tree.
    curate(inbox, output, instance, run_partition, ["a.mp4"])
    assert dataset.clips().num_rows == 7
    grouping = materialize_near_duplicates(instance, str(inbox), str(output))
    assert materialization_metadata(grouping, "near_duplicates")["groups"] == 1  # only a~c is left
    assert not removed & {r["clip_id"] for r in dataset.near_duplicates().to_pylist()}


def test_a_datasets_defs_yaml_sets_the_near_duplicates_defaults(tmp_path, instance):
    """`near_duplicates: {...}` on the dataset's component: the run config's defaults, which a run can override."""
    component = CuratedDataset.resolve_from_yaml(
        f"key_prefix: [cars]\noutput: {tmp_path / 'out'}\nnear_duplicates: {{eps: 0.2, which_to_keep: easy}}\n"
    )
    definitions = component.build_defs(None)
    key = AssetKey(["cars", "near_duplicates"])
    fields = definitions.resolve_assets_def(key).node_def.config_schema.config_type.fields
    assert (fields["eps"].default_value, fields["which_to_keep"].default_value) == (0.2, "easy")
    assert fields["rule"].default_value == "nemo"
    # Two clips 20 degrees apart (cosine similarity 0.94): near-duplicates at eps 0.2, not at NeMo's 0.01.
    angles = np.radians([0.0, 20.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    write_vectors(LocalStorage(tmp_path / "out"), ["a", "b"], vectors)
    asset_def = definitions.resolve_assets_def(key)
    run = materialize([asset_def], instance=instance)
    metadata = materialization_metadata(run, "cars/near_duplicates")
    assert metadata["duplicates"] == 1 and metadata["settings"]["which_to_keep"] == "easy"
    config = {"ops": {asset_def.node_def.name: {"config": {"eps": 0.01}}}}
    run = materialize([asset_def], instance=instance, run_config=config)
    assert materialization_metadata(run, "cars/near_duplicates")["duplicates"] == 0


def run_table_checks(instance, inbox, output):
    """The clip index's and vector tables' checks alone, as the verify job runs them: {name: evaluation}."""
    checks = [
        AssetCheckKey(AssetKey("clip_index"), "matches_outputs"),
        AssetCheckKey(AssetKey("clip_vectors"), "matches_index"),
    ]
    result = materialize(
        [processed_videos, *FAMILY_ASSETS, dataset_tables, *output_checks],
        selection=AssetSelection.checks(*checks),
        instance=instance,
        resources=build_resources(str(inbox), str(output), WriterSettingsResource(input_path="/videos")),
        raise_on_error=False,
    )
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_the_table_checks_fail_on_a_row_missing_or_extra_and_on_a_vector_missing_extra_or_differing(
    inbox, output, instance, run_partition
):
    videos = build_three_videos(inbox)
    curate(inbox, output, instance, run_partition, sorted(videos))
    storage = LocalStorage(output)
    index = lance.dataset(str(output / layout.clip_index_key()))
    vectors = lance.dataset(str(output / layout.clip_vectors_key(ALGORITHM)))
    assert verify_index(storage, sorted(videos)) == (10, []) and verify_vectors(storage).passed
    a, b = videos["a.mp4"], videos["b.mp4"]

    # The index misses a row, and holds one of a partition that is gone.
    row = index.to_table(filter=f"clip_id = '{a[0].uuid}'")
    index.delete(f"clip_id = '{a[0].uuid}'")
    stray = row.set_column(row.schema.get_field_index(ci.PARTITION_KEY), ci.PARTITION_KEY, [["gone.mp4"]])
    stray = stray.set_column(stray.schema.get_field_index(ci.CLIP_ID), ci.CLIP_ID, [[str(uuid.uuid4())]])
    index.insert(stray)
    assert verify_index(storage, sorted(videos))[1] == [
        "a.mp4: 1 clips missing, 0 not in its outputs",
        "gone.mp4: 1 rows of a partition that no longer exists",
    ]
    evaluations = run_table_checks(instance, inbox, output)
    assert not evaluations["matches_outputs"].passed and evaluations["matches_outputs"].severity.value == "ERROR"
    assert evaluations["matches_outputs"].description.startswith("a.mp4: 1 clips missing")
    index.delete("partition_key = 'gone.mp4'")
    index.insert(row)
    assert verify_index(storage, sorted(videos))[1] == []

    # A vector that differs from the index's, one missing, one of a clip that is not a passed clip.
    changed = vectors.to_table(filter=f"clip_id = '{b[0].uuid}'")
    vectors.delete(f"clip_id = '{b[0].uuid}'")
    nudged = pa.FixedSizeListArray.from_arrays(
        pa.array(np.asarray(changed.column(ci.EMBEDDING)[0].values) + np.float32(1e-3)), 32
    )
    vectors.insert(changed.set_column(changed.schema.get_field_index(ci.EMBEDDING), ci.EMBEDDING, nudged))
    vectors.delete(f"clip_id = '{b[1].uuid}'")
    filtered = a[3].uuid  # a filtered clip: in the index, but no vector of it belongs in a vector table
    vectors.insert(changed.set_column(changed.schema.get_field_index(ci.CLIP_ID), ci.CLIP_ID, [[filtered]]))
    check = verify_vectors(storage)
    assert (check.differing, check.missing, check.extra) == ([b[0].uuid], [b[1].uuid], [filtered])
    evaluation = run_table_checks(instance, inbox, output)["matches_index"]
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert evaluation.description == "1 missing, 1 not in the index, 1 differ"


def test_a_partition_no_run_holds_is_read_without_its_lock_and_one_a_run_holds_after_that_run(inbox, output, instance):
    """On an object store a lock is two writes, so the index reads a partition no run holds without one; a
    partition a run holds now is read once that run is done."""
    clips = clips_with_vectors("/videos/a.mp4", 2, seed=5)
    write_video(inbox / "a.mp4.parquet", clips, source_video="/videos/a.mp4")
    assert materialize_partition(instance, "a.mp4", str(inbox), str(output)).success
    storage = LocalStorage(output)
    lock = storage.path(layout.lock_key("a.mp4"))
    lock.unlink()  # what an object store's lease leaves once released: nothing
    found = read_locked(storage, "a.mp4")
    assert found is not None and sorted(found.vectors) == sorted(clip.uuid for clip in clips)
    assert not lock.exists()  # read without taking the lock

    held, release = threading.Event(), threading.Event()

    def run_holding_it() -> None:
        with storage.lock(layout.lock_key("a.mp4"), 10):
            held.set()
            release.wait(10)

    with ThreadPoolExecutor(2) as pool:
        holding = pool.submit(run_holding_it)
        assert held.wait(10)
        reading = pool.submit(read_locked, storage, "a.mp4")
        time.sleep(0.3)
        assert not reading.done()  # waiting for the run that holds the partition
        release.set()
        again = reading.result(timeout=10)
        holding.result()
    assert again is not None and sorted(again.documents) == sorted(found.documents)
