"""Format 2: a video delivered as chunk files, and embeddings that keep their dtype and shape.

Chunk files are written as producers write them (each on its own, `write_processed_video`), found by
discovery only once complete, and written by the engine as one partition equal, file for file, to the
same video delivered as one file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest

from clip_assets.contract import EmbeddingLayout, ProcessedVideoError, ProcessedVideoReader, write_processed_video
from clip_assets.contract.partition_keys import chunk_folder_video, chunk_key, parse_chunk_key
from clip_assets.engine.discovery import discover
from clip_assets.engine.inbox import find_delivery
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import sensor_tick
from clip_assets_tests.support.factories import make_clips, video_info

REL = "cam1/street walk.mp4"
KEY = REL


def failure(result):
    """The partition's error, as the run's step failure carries it."""
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = event.event_specific_data.error
    return (error.cause or error).message


def tree(root):
    """Every output file's bytes, the output root in `clip_location` replaced by a token."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes().replace(str(root).encode(), b"<root>")
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith("_clip_assets")
    }


def chunked_clips(num_clips=4, chunks=2):
    clips = make_clips(num_clips, filtered=[1], clips_per_chunk=num_clips // chunks)
    for clip in clips:
        clip.embeddings = {k: v.astype(np.float16).reshape(1, -1) for k, v in clip.embeddings.items()}
    return clips


def info_of(clips, chunks, **changes):
    info = video_info(num_clips=len(clips), num_chunks=chunks)
    layouts = {"cosmos-embed1": EmbeddingLayout("float16", (1, 8))}
    return dataclasses.replace(info, **{"embedding_layouts": layouts, **changes})


def write_chunk(inbox, clips, index, count, rel=REL, **changes):
    """Chunk `index` of `count`, as a worker writes it: that chunk's rows, its own metadata."""
    rows = [c for c in clips if c.chunk_index == index]
    info = info_of(clips, count, chunk_index=index, **changes)
    return write_processed_video(inbox / chunk_key(f"{rel}.parquet", index, count), info, rows)


def test_chunk_names_are_unambiguous():
    assert chunk_key("cam1/a.mp4.parquet", 1, 3) == "cam1/a.mp4.chunks/1-of-3.parquet"
    chunk = parse_chunk_key("cam1/a.mp4.chunks/1-of-3.parquet")
    assert (chunk.video_key, chunk.index, chunk.count) == ("cam1/a.mp4.parquet", 1, 3)
    for misnamed in (
        "a.chunks/01-of-3.parquet",
        "a.chunks/3-of-3.parquet",
        "a.chunks/x.parquet",
        "a.chunks/1-of-0.parquet",
    ):
        assert parse_chunk_key(misnamed) is None and chunk_folder_video(misnamed) == "a.parquet"
    assert chunk_folder_video("a.chunks/sub/0-of-1.parquet") is None  # deeper: an ordinary file
    assert chunk_folder_video("cam1/a.mp4.parquet") is None
    with pytest.raises(ValueError):
        chunk_key("a.parquet", 2, 2)


def test_a_chunked_video_is_discovered_once_complete_and_again_when_a_chunk_is_resent(tmp_path, instance):
    inbox = tmp_path / "inbox"
    clips = chunked_clips()
    write_chunk(inbox, clips, 1, 2)  # out of order: the last chunk first
    first = discover(LocalStorage(inbox))
    assert first.videos == []
    assert first.waiting == [f"{KEY}: 1 of 2 chunks; waiting for {REL}.chunks/0-of-2.parquet"]
    assert sensor_tick(instance, str(inbox)).run_requests == []

    write_chunk(inbox, clips, 0, 2)
    second = discover(LocalStorage(inbox), first.cursor)
    (video,) = second.videos
    assert (video.partition_key, video.key) == (KEY, f"{REL}.chunks")
    assert video.fingerprint.startswith("chunks:") and second.waiting == []
    assert discover(LocalStorage(inbox), second.cursor).videos == []  # handled: not new again
    tick = sensor_tick(instance, str(inbox))
    (request,) = tick.run_requests
    assert request.partition_key == KEY

    path = write_chunk(inbox, clips, 1, 2)  # re-sent: replaces its copy
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = discover(LocalStorage(inbox), second.cursor)
    (again,) = third.videos
    assert again.partition_key == KEY and again.fingerprint != video.fingerprint
    instance.add_dynamic_partitions("processed_videos", [KEY])
    assert sensor_tick(instance, str(inbox), cursor=tick.cursor).run_requests[0].run_key != request.run_key


def test_a_chunked_video_gives_the_tree_of_the_same_video_in_one_file(tmp_path, instance):
    from clip_assets_tests.support.dataset import materialize_partition

    clips = chunked_clips()
    single, chunked = tmp_path / "single", tmp_path / "chunked"
    write_processed_video(single / f"{REL}.parquet", info_of(clips, 2), clips)
    for index in (1, 0):
        write_chunk(chunked, clips, index, 2)
    for inbox in (single, chunked):
        assert materialize_partition(instance, KEY, str(inbox), str(tmp_path / f"out-{inbox.name}")).success
    expected, got = tree(tmp_path / "out-single"), tree(tmp_path / "out-chunked")
    assert expected == got and len(got) > 15
    vector = pickle.loads(got[f"ce1_embd/{clips[0].uuid}.pickle"])
    assert vector.dtype == np.float16 and vector.shape == (1, 8)
    assert pickle.dumps(clips[0].embeddings["cosmos-embed1"]) == got[f"ce1_embd/{clips[0].uuid}.pickle"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 65}, "clip_assets.video.width"),
        ({"source_video": "/videos/other.mp4"}, "clip_assets.source_video"),
        ({"num_total_clips": 9}, "clip_assets.num_total_clips"),
        ({"embedding_layouts": {"cosmos-embed1": EmbeddingLayout("float16", (8,))}}, "clip_assets.embeddings"),
    ],
)
def test_chunks_that_disagree_on_the_video_fail_naming_both_files_and_the_field(tmp_path, changes, field, instance):
    from clip_assets_tests.support.dataset import materialize_partition

    inbox = tmp_path / "inbox"
    clips = chunked_clips()
    write_chunk(inbox, clips, 0, 2)
    write_chunk(inbox, clips, 1, 2, **changes)
    result = materialize_partition(instance, KEY, str(inbox), str(tmp_path / "out"))
    assert not result.success
    message = failure(result)
    assert field in message and "0-of-2.parquet" in message and "1-of-2.parquet" in message, message
    assert not (tmp_path / "out" / "processed_videos").exists()


def test_incomplete_mixed_or_ambiguous_deliveries_are_refused_by_name(tmp_path):
    inbox = tmp_path / "inbox"
    clips = chunked_clips()
    storage = LocalStorage(inbox)
    write_chunk(inbox, clips, 0, 2)
    with pytest.raises(ProcessedVideoError, match="1 of 2 chunks; waiting for"):
        find_delivery(storage, KEY)
    write_chunk(inbox, clips, 0, 3)
    with pytest.raises(ProcessedVideoError, match=r"different deliveries, e\.g\. .*0-of-2\.parquet and .*0-of-3"):
        find_delivery(storage, KEY)
    (inbox / f"{REL}.chunks/0-of-3.parquet").unlink()
    write_chunk(inbox, clips, 1, 2)
    assert [f.key for f in find_delivery(storage, KEY).files] == [
        f"{REL}.chunks/0-of-2.parquet",
        f"{REL}.chunks/1-of-2.parquet",
    ]
    write_processed_video(inbox / f"{REL}.parquet", info_of(clips, 2), clips)
    with pytest.raises(ProcessedVideoError, match="both as"):
        find_delivery(storage, KEY)
    result = discover(storage)
    assert result.videos == [] and "both as" in result.waiting[0]
    (inbox / f"{REL}.parquet").unlink()
    (inbox / f"{REL}.chunks/notes.parquet").write_bytes(b"PAR1")
    with pytest.raises(ProcessedVideoError, match="is not named <index>-of-<count>"):
        find_delivery(storage, KEY)


def test_a_chunk_file_s_name_rows_and_metadata_must_agree(tmp_path, instance):
    from clip_assets_tests.support.dataset import materialize_partition

    inbox = tmp_path / "inbox"
    clips = chunked_clips()
    write_chunk(inbox, clips, 0, 2)
    rows = [c for c in clips if c.chunk_index == 1]
    wrong = info_of(clips, 2, chunk_index=0)  # says chunk 0, named chunk 1
    write_processed_video(inbox / chunk_key(f"{REL}.parquet", 1, 2), wrong, rows)
    result = materialize_partition(instance, KEY, str(inbox), str(tmp_path / "out"))
    message = failure(result)
    assert "1-of-2.parquet" in message and "clip_assets.chunk_index" in message


def test_embedding_layouts_restore_dtype_and_shape_and_refuse_what_does_not_fit(tmp_path):
    clips = make_clips(2)
    for clip in clips:
        clip.embeddings["cosmos-embed1"] = clip.embeddings["cosmos-embed1"].astype(np.float16).reshape(1, 8)
    path = write_processed_video(tmp_path / "a.parquet", info_of(clips, 1), clips)
    with ProcessedVideoReader(str(path), "a.parquet") as reader:
        vectors = [c.embeddings["cosmos-embed1"] for c in reader.iter_clips()]
    assert all(v.dtype == np.float16 and v.shape == (1, 8) for v in vectors)
    np.testing.assert_array_equal(vectors[0], clips[0].embeddings["cosmos-embed1"])

    wide = dataclasses.replace(
        info_of(clips, 1), embedding_layouts={"cosmos-embed1": EmbeddingLayout("float16", (2, 8))}
    )
    path = write_processed_video(tmp_path / "b.parquet", wide, clips)
    with (
        pytest.raises(ProcessedVideoError, match="do not fill the declared shape") as caught,
        ProcessedVideoReader(str(path), "b.parquet") as reader,
    ):
        list(reader.iter_clips())
    assert caught.value.field == "embeddings[cosmos-embed1]" and caught.value.row == 0

    for clip in clips:
        clip.embeddings["cosmos-embed1"] = np.full((1, 8), 1 / 3, dtype=np.float32)  # not a float16
    narrow = info_of(clips, 1)
    path = write_processed_video(tmp_path / "c.parquet", narrow, clips)
    with (
        pytest.raises(ProcessedVideoError, match="not exactly representable as the declared float16"),
        ProcessedVideoReader(str(path), "c.parquet") as reader,
    ):
        list(reader.iter_clips())


def test_format_1_files_may_not_use_format_2_keys(tmp_path):
    import json

    import pyarrow.parquet as pq

    from clip_assets.contract import schema

    path = write_processed_video(tmp_path / "a.parquet", info_of(make_clips(1), 1, chunk_index=0), make_clips(1))
    table = pq.read_table(path)
    doc = json.loads(table.schema.metadata[schema.METADATA_KEY])
    doc["format_version"] = 1
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: json.dumps(doc)}), path)
    with pytest.raises(ProcessedVideoError, match="needs format_version 2") as caught:
        ProcessedVideoReader(str(path), "a.parquet")
    assert caught.value.field == "clip_assets.chunk_index"


def test_a_huge_chunk_count_in_a_name_costs_nothing_and_never_completes(tmp_path):
    """`0-of-999999999` names a video of a billion chunks: it waits, and discovery does not count to a billion."""
    inbox = tmp_path / "inbox"
    clips = chunked_clips()
    path = write_chunk(inbox, clips, 0, 2)
    path.rename(inbox / f"{REL}.chunks/0-of-999999999.parquet")
    result = discover(LocalStorage(inbox))
    assert result.videos == [] and result.waiting == [
        f"{KEY}: 1 of 999999999 chunks; waiting for {REL}.chunks/1-of-999999999.parquet"
    ]


def test_a_resent_chunk_rewrites_the_video_and_an_unchanged_one_is_not_reread(tmp_path, instance):
    """The output version covers every chunk: the same chunks again are verified, not read; one chunk
    sent again with other content makes the partition write that content."""
    from clip_assets_tests.support.dataset import materialization_metadata, materialize_partition

    inbox, output = tmp_path / "inbox", tmp_path / "out"
    clips = chunked_clips()
    for index in (0, 1):
        write_chunk(inbox, clips, index, 2)
    assert materialize_partition(instance, KEY, str(inbox), str(output)).success
    again = materialize_partition(instance, KEY, str(inbox), str(output))
    assert materialization_metadata(again, "clip_metadata")["input_unchanged"] is True

    clips[3].windows[0].captions["qwen"] = "a different caption, sent again"
    path = write_chunk(inbox, clips, 1, 2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    resent = materialize_partition(instance, KEY, str(inbox), str(output))
    assert materialization_metadata(resent, "clip_metadata")["input_unchanged"] is False
    assert b"a different caption, sent again" in (output / f"metas/v0/{clips[3].uuid}.json").read_bytes()
