"""Real processed videos through real Dagster runs: the NeMo tree, idempotence, stale removal, failures."""

import hashlib
import json
import pickle
import shutil

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clip_assets import layout
from clip_assets.engine import partition_input
from clip_assets.engine.manifest import PartitionManifest
from clip_assets_tests.support.dataset import materialization_metadata, stored_output_digest
from clip_assets_tests.support.factories import SOURCE_VIDEO, make_clips, video_info, write_video

FAMILIES = ("clip_files", "clip_previews", "clip_embeddings", "clip_metadata", "video_summaries")
REL = "cam1/street walk.mp4"
KEY = "cam1/street walk.mp4"


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def nemo_tree(root):
    return [k for k in tree(root) if not k.startswith("_clip_assets/")]


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "_clip_assets" not in p.parts}


def test_one_video_produces_the_nemo_tree(inbox, output, run_partition):
    clips = make_clips(4, filtered=[1], clips_per_chunk=2)
    write_video(inbox / f"{REL}.parquet", clips)
    result = run_partition(KEY)
    assert result.success
    passed = [c for c in clips if not c.filtered]
    uuid5 = [layout.chunk_embedding_uuid(SOURCE_VIDEO, i) for i in (0, 1)]
    assert nemo_tree(output) == sorted(
        [f"clips/{c.uuid}.mp4" for c in passed]
        + [f"filtered_clips/{clips[1].uuid}.mp4"]
        + [f"previews/{c.uuid}/{w}.webp" for c in passed for w in ("0_4", "4_8")]
        + [f"metas/v0/{c.uuid}.json" for c in clips]
        + [f"ce1_embd/{c.uuid}.pickle" for c in passed]
        + [f"ce1_embd_parquet/{u}.parquet" for u in uuid5]
        + [f"processed_videos/{REL}.json", f"processed_clip_chunks/{REL}_0.json", f"processed_clip_chunks/{REL}_1.json"]
    )

    for clip in clips:
        folder = "filtered_clips" if clip.filtered else "clips"
        with av.open(str(output / folder / f"{clip.uuid}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == 8
    for path in output.glob("previews/*/*.webp"):
        with Image.open(path) as image:
            assert image.format == "WEBP" and image.n_frames == 2
            image.seek(1)
            image.convert("RGB")

    meta = json.loads((output / f"metas/v0/{clips[0].uuid}.json").read_text())
    assert list(meta) == [
        "span_uuid", "source_video", "duration_span", "width_source", "height_source", "framerate_source",
        "clip_location", "width", "height", "framerate", "num_frames", "video_codec", "num_bytes",
        "motion_score", "aesthetic_score", "windows", "valid",
    ]  # fmt: skip
    assert meta["span_uuid"] == clips[0].uuid and meta["source_video"] == SOURCE_VIDEO
    assert meta["clip_location"] == f"{output.resolve()}/clips/{clips[0].uuid}.mp4"
    assert (meta["width"], meta["height"], meta["num_frames"], meta["video_codec"]) == (64, 48, 8, "h264")
    assert meta["framerate"] == 24.0 and meta["num_bytes"] == len(clips[0].mp4)
    assert meta["windows"] == [
        {
            "start_frame": 0,
            "end_frame": 4,
            "qwen_caption": "clip 0 first half",
            "qwen_lm_enhanced_caption": "enhanced 0",
        },
        {"start_frame": 4, "end_frame": 8, "qwen_caption": "clip 0 second half"},
    ]
    assert meta["valid"] is True
    filtered_meta = json.loads((output / f"metas/v0/{clips[1].uuid}.json").read_text())
    assert filtered_meta["windows"] == [] and filtered_meta["valid"] is False
    assert filtered_meta["clip_location"].endswith(f"filtered_clips/{clips[1].uuid}.mp4")

    table = pq.read_table(output / f"ce1_embd_parquet/{uuid5[1]}.parquet")
    assert table.column_names == ["id", "embedding"]
    assert table.column("id").to_pylist() == [clips[2].uuid, clips[3].uuid]
    vector = pickle.loads((output / f"ce1_embd/{clips[2].uuid}.pickle").read_bytes())
    np.testing.assert_array_equal(vector, clips[2].embeddings["cosmos-embed1"])

    chunk = json.loads((output / f"processed_clip_chunks/{REL}_0.json").read_text())
    assert chunk["clips"] == [clips[0].uuid] and chunk["filtered_clips"] == [clips[1].uuid]

    for family in FAMILIES:
        manifest = PartitionManifest.from_bytes((output / layout.manifest_key(family, KEY)).read_bytes())
        assert manifest.entries
        for key, entry in manifest.entries.items():
            data = (output / key).read_bytes()
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry.sha256, entry.size)
        metadata = materialization_metadata(result, family)
        assert metadata["manifest_sha256"] == stored_output_digest(output, family, KEY)
        assert metadata["written"] == len(manifest.entries) and metadata["skipped_identical"] == 0
    assert "data:image/png;base64," in materialization_metadata(result, "clip_previews")["preview"]


def test_rerun_of_an_unchanged_partition_rewrites_nothing(inbox, output, run_partition):
    write_video(inbox / f"{REL}.parquet", num_clips=3)
    assert run_partition(KEY).success
    before = mtimes(output)
    result = run_partition(KEY)
    assert result.success
    assert mtimes(output) == before
    for family in FAMILIES:
        metadata = materialization_metadata(result, family)
        assert metadata["written"] == 0 and metadata["skipped_identical"] == metadata["artifacts"] > 0


def test_a_removed_output_is_rewritten_by_a_rerun_unless_verification_is_off(inbox, output, run_partition):
    write_video(inbox / f"{REL}.parquet", num_clips=3)
    assert run_partition(KEY).success
    clip = sorted((output / "clips").rglob("*.mp4"))[0]
    original = clip.read_bytes()
    clip.unlink()
    trusted = run_partition(KEY, verify_unchanged_outputs=False)
    assert trusted.success and not clip.exists()  # the manifests alone decided: nothing was looked at
    assert materialization_metadata(trusted, "clip_files")["input_unchanged"] is True
    verified = run_partition(KEY)  # the default: every recorded object is stat'ed first
    assert verified.success and clip.read_bytes() == original
    metadata = materialization_metadata(verified, "clip_files")
    assert metadata["input_unchanged"] is False and metadata["written"] == 1


def test_a_streamed_input_writes_what_an_input_read_whole_writes(inbox, output, run_partition, monkeypatch):
    """Inputs up to IN_MEMORY_INPUT_BYTES are read once, whole; larger ones are streamed twice: same outputs."""
    write_video(inbox / f"{REL}.parquet", num_clips=3)
    assert run_partition(KEY).success
    whole = {key: (output / key).read_bytes() for key in tree(output) if not key.startswith("_")}
    shutil.rmtree(output)
    monkeypatch.setattr(partition_input, "IN_MEMORY_INPUT_BYTES", 0)  # every file is "large": streamed
    assert run_partition(KEY).success
    streamed = {key: (output / key).read_bytes() for key in tree(output) if not key.startswith("_")}
    assert streamed == whole and len(whole) > 10


def test_removing_a_clip_from_the_input_leaves_none_of_its_files(inbox, output, run_partition):
    clips = make_clips(3)
    write_video(inbox / f"{REL}.parquet", clips)
    assert run_partition(KEY).success
    gone = clips[1].uuid
    assert any(gone in key for key in tree(output))
    write_video(inbox / f"{REL}.parquet", [clips[0], clips[2]])
    result = run_partition(KEY)
    assert result.success
    assert not any(gone in key for key in tree(output))
    for key in tree(output):
        if key.endswith(".json") and not key.startswith("_"):
            assert gone not in (output / key).read_text()
    assert materialization_metadata(result, "clip_files")["removed_stale"] == 1
    assert materialization_metadata(result, "clip_previews")["removed_stale"] == 2


def test_invalid_video_fails_alone_and_writes_nothing(inbox, output, run_partition, reliability):
    write_video(inbox / "good.mp4.parquet", source_video="/videos/good.mp4", num_clips=2)
    clips = make_clips(3, source_video="/videos/bad.mp4")
    clips[2].span_end = clips[2].span_start - 1
    write_video(inbox / "bad.mp4.parquet", clips, source_video="/videos/bad.mp4")

    bad = run_partition("bad.mp4")
    assert not bad.success
    # One step writes the five families; it fails with the input's error, and none of them is materialized.
    failures = [e for e in bad.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert bad.get_asset_materialization_events() == []
    for event in failures:
        error = event.event_specific_data.error
        message = error.cause.message  # the UI shows it under the step's failure
        assert "bad.mp4.parquet" in message and "row 2" in message and "span_end" in message
        assert clips[2].uuid in message
    assert not output.exists() or not any("bad" in key for key in tree(output))

    assert run_partition("good.mp4").success
    assert "processed_videos/good.mp4.json" in tree(output)
    assert not any("bad" in key for key in tree(output))
    reliability.record(
        "bad input",
        "span end before start, through a Dagster run",
        tried=1,
        handled=1,
        nothing_lost="five families failed naming file, row, clip, field; none of it written; the other video complete",
    )


def test_failed_run_after_a_good_one_leaves_previous_outputs_untouched(inbox, output, run_partition, reliability):
    clips = make_clips(2)
    write_video(inbox / f"{REL}.parquet", clips)
    assert run_partition(KEY).success
    before = {k: (output / k).read_bytes() for k in tree(output)}
    clips[1].embeddings["cosmos-embed1"][0] = np.nan
    write_video(inbox / f"{REL}.parquet", clips)
    assert not run_partition(KEY).success
    record = layout.video_error_key(KEY)  # why it failed, kept until it succeeds (test_failures.py)
    assert "embeddings" in json.loads((output / record).read_text())["errors"][0]["field"]
    assert {k: (output / k).read_bytes() for k in tree(output) if k != record} == before
    reliability.record(
        "bad input",
        "non-finite embedding in a new version of a good video",
        tried=1,
        handled=1,
        nothing_lost="the previous outputs byte for byte, manifests included",
    )


def test_settings_dry_run_and_no_upload(inbox, output, run_partition):
    write_video(inbox / f"{REL}.parquet", num_clips=2)
    assert run_partition(KEY, dry_run=True).success
    assert {k.split("/")[0] for k in nemo_tree(output)} == {"processed_videos", "processed_clip_chunks"}
    assert run_partition(KEY, upload_clips=False).success
    folders = {k.split("/")[0] for k in nemo_tree(output)}
    assert "clips" not in folders and {"metas", "previews", "ce1_embd", "ce1_embd_parquet"} <= folders


def test_a_foreign_producers_file_with_other_arrow_types_and_derived_ids(inbox, output, run_partition):
    """Another writer: int64/large types, 'item'-named lists, one row group, no clip_uuid column."""
    clips = make_clips(3, filtered=[2])
    window = pa.struct(
        [
            ("start_frame", pa.int64()),
            ("end_frame", pa.int64()),
            ("webp", pa.large_binary()),
            ("captions", pa.map_(pa.large_string(), pa.large_string())),
        ]
    )
    table = pa.table(
        {
            "chunk_index": pa.array([0, 0, 0], pa.int64()),
            "span_start": [c.span_start for c in clips],
            "span_end": [c.span_end for c in clips],
            "filtered": [c.filtered for c in clips],
            "filtered_by": pa.array([c.filtered_by for c in clips], pa.large_string()),
            "mp4": pa.array([c.mp4 for c in clips], pa.large_binary()),
            "windows": pa.array(
                [
                    [
                        {"start_frame": w.start_frame, "end_frame": w.end_frame, "webp": w.webp, "captions": w.captions}
                        for w in c.windows
                    ]
                    for c in clips
                ],
                pa.large_list(window),
            ),
            "embeddings": pa.array(
                [list(c.embeddings.items()) for c in clips], pa.map_(pa.string(), pa.list_(pa.float64()))
            ),
        }
    )
    info = json.dumps(
        {
            "format_version": 1,
            "source_video": SOURCE_VIDEO,
            "video": {"width": 64, "height": 48, "framerate": 24},
            "num_total_clips": 3,
            "num_clip_chunks": 1,
        }
    )
    table = table.replace_schema_metadata({"clip_assets": info})
    (inbox / "cam1").mkdir()
    pq.write_table(table, inbox / f"{REL}.parquet", use_compliant_nested_type=False)

    assert run_partition(KEY).success
    assert sorted(p.stem for p in (output / "metas/v0").iterdir()) == sorted(c.uuid for c in clips)
    vector = pickle.loads((output / f"ce1_embd/{clips[0].uuid}.pickle").read_bytes())
    assert vector.dtype == np.float64  # the producer's dtype is kept
    np.testing.assert_array_equal(vector, clips[0].embeddings["cosmos-embed1"])
    meta = json.loads((output / f"metas/v0/{clips[0].uuid}.json").read_text())
    assert meta["windows"][0] == {"start_frame": 0, "end_frame": 4, "qwen_caption": "clip 0 first half"}


def test_keys_dagster_refuses_are_encoded_and_still_written(inbox, output, run_partition):
    write_video(inbox / "odd...name.mp4.parquet", source_video="/videos/odd...name.mp4", num_clips=1)
    assert run_partition("odd%2E%2E%2Ename.mp4").success
    assert (output / "processed_videos/odd...name.mp4.json").exists()


def test_a_video_outside_input_path_is_rejected_before_writing(inbox, output, run_partition):
    write_video(inbox / "x.mp4.parquet", source_video="/elsewhere/x.mp4", num_clips=2)
    result = run_partition("x.mp4")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.cause.message
    assert "x.mp4.parquet" in message and "clip_assets.source_video" in message and "not under input_path" in message
    assert not output.exists() or nemo_tree(output) == []


def test_a_video_without_clips_still_gets_its_summary(inbox, output, run_partition):
    write_video(inbox / f"{REL}.parquet", [], info=video_info(num_clips=0, num_chunks=0))
    assert run_partition(KEY).success
    assert nemo_tree(output) == [f"processed_clip_chunks/{REL}_0.json", f"processed_videos/{REL}.json"]
    chunk = json.loads((output / f"processed_clip_chunks/{REL}_0.json").read_text())
    assert chunk["clips"] == [] and chunk["num_clips_passed"] == 0 and chunk["total_clip_duration"] == 0.0


def test_float16_embeddings_keep_their_dtype(inbox, output, run_partition):
    clips = make_clips(2)
    for clip in clips:
        clip.embeddings["cosmos-embed1"] = clip.embeddings["cosmos-embed1"].astype(np.float16)
    path = inbox / f"{REL}.parquet"
    write_video(path, clips)
    table = pq.read_table(path)  # our writer stores float32; a producer may store float16
    embeddings = pa.array(
        [list((k, np.asarray(v, dtype=np.float16)) for k, v in c.embeddings.items()) for c in clips],
        pa.map_(pa.string(), pa.list_(pa.float16())),
    )
    table = table.set_column(table.schema.get_field_index("embeddings"), "embeddings", embeddings)
    pq.write_table(table, path)
    assert run_partition(KEY).success
    vector = pickle.loads((output / f"ce1_embd/{clips[0].uuid}.pickle").read_bytes())
    assert vector.dtype == np.float16
    np.testing.assert_array_equal(vector, clips[0].embeddings["cosmos-embed1"])
    chunk = pq.read_table(output / f"ce1_embd_parquet/{layout.chunk_embedding_uuid(SOURCE_VIDEO, 0)}.parquet")
    assert chunk.schema.field("embedding").type.value_type == pa.float16()


def test_an_unchanged_partition_is_verified_not_reread(inbox, output, run_partition):
    clips = make_clips(3)
    write_video(inbox / f"{REL}.parquet", clips)
    assert run_partition(KEY).success
    rerun = run_partition(KEY)
    for family in FAMILIES:
        metadata = materialization_metadata(rerun, family)
        assert metadata["input_unchanged"] is True and metadata["written"] == 0
    assert not any("valid," in str(e.message) for e in rerun.all_events)  # the input was not inspected

    changed_settings = run_partition(KEY, caption_models=["qwen"])
    assert materialization_metadata(changed_settings, "clip_metadata")["input_unchanged"] is False

    damaged = output / f"metas/v0/{clips[1].uuid}.json"
    good = damaged.read_bytes()
    damaged.write_bytes(good[:10])
    repaired = run_partition(KEY, caption_models=["qwen"])
    metadata = materialization_metadata(repaired, "clip_metadata")
    assert (metadata["input_unchanged"], metadata["written"]) == (False, 1)
    assert damaged.read_bytes() == good
