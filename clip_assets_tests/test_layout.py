import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clip_assets import layout
from clip_assets.storage.keys import UnsafeKeyError, check_key


def test_nemo_paths_for_a_clip():
    clip = "0b7c2f3e-4a5d-5e6f-8a9b-0c1d2e3f4a5b"
    assert layout.clip_key(clip, filtered=False) == f"clips/{clip}.mp4"
    assert layout.clip_key(clip, filtered=True) == f"filtered_clips/{clip}.mp4"
    assert layout.preview_key(clip, 0, 256) == f"previews/{clip}/0_256.webp"
    assert layout.clip_metadata_key(clip) == f"metas/v0/{clip}.json"
    assert layout.embedding_pickle_key("cosmos-embed1", clip) == f"ce1_embd/{clip}.pickle"
    assert layout.embedding_pickle_key("internvideo2", clip) == f"iv2_embd/{clip}.pickle"


def test_chunk_parquet_name_is_nemos_uuid5_of_video_and_chunk():
    expected = uuid.uuid5(uuid.NAMESPACE_URL, "/data/v/a.mp4_3")
    assert layout.chunk_embedding_key("cosmos-embed1", "/data/v/a.mp4", 3) == f"ce1_embd_parquet/{expected}.parquet"
    # NeMo passes the path through pathlib, which collapses '//' and './'
    assert layout.chunk_embedding_uuid("/data//v/./a.mp4", 3) == str(expected)


def test_other_algorithms_get_their_own_prefix_never_a_nemo_one():
    assert layout.embedding_prefix("color-grid-4x4-v1") == "color-grid-4x4-v1"
    assert layout.embedding_prefix("cosmos-embed1-448p") == "ce1"
    for name in ("---", "ce1", "iv2", "Color Grid", "a/b", ""):
        with pytest.raises(layout.LayoutError):
            layout.embedding_prefix(name)


@pytest.mark.parametrize(
    ("video", "input_path", "rel"),
    [
        ("/data/videos/cam1/street walk.mp4", "/data/videos", "cam1/street walk.mp4"),
        ("/data/videos/cam1/a.mp4", "/data/videos/", "cam1/a.mp4"),
        ("/data/videos/ünï cödé.mov", "/data", "videos/ünï cödé.mov"),
        ("/data/videos/a.mp4", "", "data/videos/a.mp4"),
        ("s3://bucket/videos/a.mp4", "s3://bucket/videos", "a.mp4"),
    ],
)
def test_relative_video_path_strips_input_path(video, input_path, rel):
    assert layout.video_relative_path(video, input_path) == rel
    assert layout.video_metadata_key(rel) == f"processed_videos/{rel}.json"
    assert layout.chunk_stats_key(rel, 2) == f"processed_clip_chunks/{rel}_2.json"


@pytest.mark.parametrize(
    ("video", "input_path"),
    [
        ("/data/videos2/a.mp4", "/data/videos"),  # NeMo's string prefix would accept this
        ("/elsewhere/a.mp4", "/data/videos"),
        ("/data/videos/../../etc/passwd", "/data/videos"),
        ("/data/videos/./a.mp4/..", ""),
        ("/data/videos/a\\..\\b.mp4", "/data/videos"),
        ("/data/videos/a\x01.mp4", "/data/videos"),
        ("/data/videos", "/data/videos"),
    ],
)
def test_relative_video_path_refuses_escapes_and_non_members(video, input_path):
    with pytest.raises(layout.LayoutError):
        layout.video_relative_path(video, input_path)


@given(st.text(min_size=1), st.sampled_from(["", "/data", "/data/videos"]))
def test_every_accepted_relative_path_stays_below_the_root(video, input_path):
    try:
        rel = layout.video_relative_path(video, input_path)
    except layout.LayoutError:
        return
    for key in (layout.video_metadata_key(rel), layout.chunk_stats_key(rel, 0)):
        assert check_key(key) == key
        parts = key.split("/")
        assert ".." not in parts and "." not in parts and "" not in parts
        assert "\x00" not in key and "\\" not in key


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a\x00b"])
def test_check_key_refuses_unsafe_keys(key):
    with pytest.raises(UnsafeKeyError):
        check_key(key)


def test_manifest_keys_are_internal_and_distinct_per_partition():
    a, b = layout.manifest_key("clip_files", "x/a.mp4"), layout.manifest_key("clip_files", "x/b.mp4")
    assert a != b
    assert a.startswith("_clip_assets/manifests/clip_files/")
