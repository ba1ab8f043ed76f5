import io
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.engine.inspection import inspect_clips
from clip_assets.families import BuildReport, clip_embeddings, clip_files, clip_previews, video_summaries
from clip_assets.families.base import VideoContext, build
from clip_assets.settings import WriterSettings
from clip_assets_tests.support.factories import SOURCE_VIDEO, make_clips, video_info


def facts(clips):
    return inspect_clips("test.parquet", clips).facts


def built(family, clips, settings, report, info=None):
    """Every artifact one family builds from `clips`, as the engine's one pass would hand them over."""
    video = VideoContext(info or video_info(), settings, facts(clips))
    return list(build(family.builder(video, report), clips))


def keys(artifacts):
    return sorted(a.key for a in artifacts)


def test_clip_files_go_to_clips_or_filtered_clips():
    clips = make_clips(3, filtered=[1])
    report = BuildReport()
    out = list(built(clip_files.FAMILY, clips, WriterSettings(), report))
    assert keys(out) == sorted(
        [f"clips/{clips[0].uuid}.mp4", f"filtered_clips/{clips[1].uuid}.mp4", f"clips/{clips[2].uuid}.mp4"]
    )
    assert out[0].data == clips[0].mp4


def test_clip_files_respect_upload_clips_dry_run_and_missing_bytes():
    clips = make_clips(2)
    clips[1].mp4 = None
    report = BuildReport()
    assert list(built(clip_files.FAMILY, clips, WriterSettings(upload_clips=False), report)) == []
    assert report.counts["not_uploaded"] == 1 and report.counts["without_mp4"] == 1
    assert "has no buffer" in report.warnings[0]
    assert list(built(clip_files.FAMILY, clips, WriterSettings(dry_run=True), BuildReport())) == []


def test_previews_per_window_of_passed_clips_only():
    clips = make_clips(2, filtered=[0])
    clips[1].windows[1].webp = None
    report = BuildReport()
    out = list(built(clip_previews.FAMILY, clips, WriterSettings(), report))
    assert keys(out) == [f"previews/{clips[1].uuid}/0_4.webp"]
    assert report.counts["windows_without_webp"] == 1 and "has no webp" in report.warnings[0]
    assert list(built(clip_previews.FAMILY, clips, WriterSettings(dry_run=True), BuildReport())) == []


def test_embeddings_pickles_and_one_parquet_per_chunk_in_clip_order():
    clips = make_clips(5, filtered=[3], clips_per_chunk=2)
    report = BuildReport()
    out = {a.key: a.data for a in built(clip_embeddings.FAMILY, clips, WriterSettings(), report)}
    vector = pickle.loads(out[f"ce1_embd/{clips[0].uuid}.pickle"])
    assert vector.dtype == np.float32 and vector.shape == (8,)
    np.testing.assert_array_equal(vector, clips[0].embeddings["cosmos-embed1"])
    chunk0 = pq.read_table(io.BytesIO(out[layout.chunk_embedding_key("cosmos-embed1", SOURCE_VIDEO, 0)]))
    assert chunk0.column("id").to_pylist() == [clips[0].uuid, clips[1].uuid]
    chunk1 = pq.read_table(io.BytesIO(out[layout.chunk_embedding_key("cosmos-embed1", SOURCE_VIDEO, 1)]))
    assert chunk1.column("id").to_pylist() == [clips[2].uuid]  # clip 3 is filtered
    np.testing.assert_array_equal(
        np.array(chunk1.column("embedding").to_pylist()[0], dtype=np.float32), clips[2].embeddings["cosmos-embed1"]
    )
    assert chunk0.schema.field("embedding").type.value_type == pa.float32()  # not widened to float64
    assert len(out) == 4 + 3
    assert report.counts["embeddings"] == 4


def test_embeddings_of_another_algorithm_are_reported_missing():
    clips = make_clips(2, algorithm="internvideo2")
    report = BuildReport()
    assert list(built(clip_embeddings.FAMILY, clips, WriterSettings(), report)) == []
    assert "has no cosmos-embed1 embedding (it has ['internvideo2'])" in report.warnings[0]
    out = list(built(clip_embeddings.FAMILY, clips, WriterSettings(embedding_algorithm="internvideo2"), report))
    assert {a.key.split("/")[0] for a in out} == {"iv2_embd", "iv2_embd_parquet"}


def test_video_summary_documents_follow_nemo():
    clips = make_clips(4, filtered=[1], clips_per_chunk=2)
    clips[3].windows[0].webp = None
    clips[3].windows[1].webp = None
    info = video_info(num_clips=4, num_chunks=2)
    settings = WriterSettings(input_path="/videos", caption_models=("qwen",))
    out = {a.key: json.loads(a.data) for a in built(video_summaries.FAMILY, clips, settings, BuildReport(), info)}
    rel = "cam1/street walk.mp4"
    assert sorted(out) == [
        f"processed_clip_chunks/{rel}_0.json",
        f"processed_clip_chunks/{rel}_1.json",
        f"processed_videos/{rel}.json",
    ]
    video = out[f"processed_videos/{rel}.json"]
    assert list(video) == [
        "video", "height", "width", "framerate", "num_frames", "duration", "video_codec",
        "pixel_format", "audio_format", "num_total_clips", "num_clip_chunks",
    ]  # fmt: skip
    assert video["video"] == SOURCE_VIDEO and video["num_clip_chunks"] == 2
    chunk0 = out[f"processed_clip_chunks/{rel}_0.json"]
    assert chunk0["clips"] == [clips[0].uuid] and chunk0["filtered_clips"] == [clips[1].uuid]
    assert chunk0["num_clips_filtered_by_motion"] == 1
    assert (chunk0["num_clips_passed"], chunk0["num_clips_transcoded"]) == (1, 2)
    assert chunk0["total_clip_duration"] == clips[0].duration + clips[1].duration
    assert chunk0["all_windows"] == {clips[0].uuid: {"0_4": "clip 0 first half", "4_8": "clip 0 second half"}}
    assert chunk0["all_windows_enhanced_caption"] == {clips[0].uuid: {"0_4": "enhanced 0"}}
    chunk1 = out[f"processed_clip_chunks/{rel}_1.json"]
    assert (chunk1["num_clips_passed"], chunk1["num_clips_with_webp"], chunk1["num_clips_with_embeddings"]) == (2, 1, 2)


def test_caption_model_order_picks_the_first_listed_model_present():
    clips = make_clips(1)
    clips[0].windows[0].captions = {"vila": "from vila", "qwen": "from qwen"}
    settings = WriterSettings(caption_models=("qwen", "vila"))
    out = [
        json.loads(a.data)
        for a in built(video_summaries.FAMILY, clips, settings, BuildReport(), video_info(num_clips=1))
    ]
    assert out[1]["all_windows"][clips[0].uuid]["0_4"] == "from qwen"
    unset = [
        json.loads(a.data)
        for a in built(video_summaries.FAMILY, clips, WriterSettings(), BuildReport(), video_info(num_clips=1))
    ]
    assert unset[1]["all_windows"][clips[0].uuid]["0_4"] == "from vila"
    none_listed = WriterSettings(caption_models=("other",))
    out = [
        json.loads(a.data)
        for a in built(video_summaries.FAMILY, clips, none_listed, BuildReport(), video_info(num_clips=1))
    ]
    assert out[1]["all_windows"][clips[0].uuid] == {} and out[1]["num_clips_with_caption"] == 0


def test_dry_run_still_writes_the_summary():
    clips = make_clips(2)
    dry_run = WriterSettings(dry_run=True)
    out = list(built(video_summaries.FAMILY, clips, dry_run, BuildReport(), video_info(num_clips=2)))
    assert len(out) == 2


def test_total_duration_is_summed_in_nemos_order_passed_then_filtered():
    clips = make_clips(3, filtered=[1])
    for clip, duration in zip(clips, (0.1, 0.3, 0.7), strict=True):
        clip.span_start, clip.span_end = 0.0, duration
    (_, chunk) = [
        json.loads(a.data) for a in built(video_summaries.FAMILY, clips, WriterSettings(), BuildReport(), video_info())
    ]
    passed, filtered = [clips[0].duration, clips[2].duration], clips[1].duration
    file_order = sum(clip.duration for clip in clips)
    assert chunk["total_clip_duration"] == sum(passed) + filtered
    assert chunk["total_clip_duration"] != file_order  # these durations tell the two orders apart in the last bit
    assert chunk["max_clip_duration"] == 0.7


def test_filtered_clips_with_captions_count_as_nemo_counts_them():
    clips = make_clips(2, filtered=[1])
    clips[1].windows = [clips[0].windows[0]]
    (_, chunk) = [
        json.loads(a.data) for a in built(video_summaries.FAMILY, clips, WriterSettings(), BuildReport(), video_info())
    ]
    assert chunk["num_clips_with_caption"] == 2
    assert list(chunk["all_windows"]) == [clips[0].uuid]  # only passed clips are listed
