import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets.contract import ProcessedVideoError, ProcessedVideoReader, schema
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.contract.reader import ALL_COLUMNS
from clip_assets.engine.inspection import inspect_video
from clip_assets_tests.support.factories import FPS, SOURCE_VIDEO, make_clips, tiny_mp4, video_info, write_video


def read_all(path, columns=ALL_COLUMNS):
    with ProcessedVideoReader(str(path), path.name) as reader:
        return reader.info, list(reader.iter_clips(columns))


def test_round_trip_keeps_every_field(tmp_path):
    clips = make_clips(4, filtered=[2], clips_per_chunk=2)
    path = write_video(tmp_path / "v.parquet", clips)
    info, read = read_all(path)
    assert info == video_info(num_clips=4, num_chunks=2)
    assert [c.uuid for c in read] == [c.uuid for c in clips]
    for original, got in zip(clips, read, strict=True):
        assert got.mp4 == original.mp4
        assert got.windows == original.windows
        assert got.embeddings.keys() == original.embeddings.keys()
        for name, vector in original.embeddings.items():
            assert got.embeddings[name].dtype == np.float32
            np.testing.assert_array_equal(got.embeddings[name], vector)
        assert (got.filtered, got.filtered_by, got.chunk_index) == (
            original.filtered,
            original.filtered_by,
            original.chunk_index,
        )


def test_projection_reads_only_requested_columns(tmp_path):
    path = write_video(tmp_path / "v.parquet", make_clips(2))
    _, clips = read_all(path, [schema.WINDOWS])
    assert all(c.mp4 is None and not c.embeddings for c in clips)
    assert all(w.webp is None and w.captions for c in clips for w in c.windows)
    _, clips = read_all(path, [schema.WINDOWS, schema.WINDOW_WEBP_COLUMN])
    assert all(w.webp for c in clips for w in c.windows)


def test_streams_in_batches_without_loading_every_clip(tmp_path):
    path = write_video(tmp_path / "v.parquet", make_clips(20))
    assert pq.ParquetFile(path).num_row_groups == 3  # the writer's row groups stay small
    with ProcessedVideoReader(str(path), "v", batch_size=4) as reader:
        iterator = reader.iter_clips([schema.MP4])
        first = next(iterator)
        assert first.row == 0
        assert sum(1 for _ in iterator) == 19


def test_missing_clip_ids_are_derived_like_nemo(tmp_path):
    table = pq.read_table(write_video(tmp_path / "tmp.parquet", make_clips(2)))
    table = table.set_column(0, schema.CLIP_UUID, pa.array([None, None], pa.string()))
    pq.write_table(table, tmp_path / "v.parquet")
    _, read = read_all(tmp_path / "v.parquet")
    assert [c.uuid for c in read] == [
        derive_clip_uuid(SOURCE_VIDEO, 0, 8 / FPS, FPS),
        derive_clip_uuid(SOURCE_VIDEO, 8 / FPS, 16 / FPS, FPS),
    ]


def rewrite(tmp_path, mutate_table=None, mutate_meta=None):
    """A valid file, then one thing changed: the test names the file, row and field it expects."""
    table = pq.read_table(write_video(tmp_path / "good.parquet", make_clips(3)))
    meta = json.loads(table.schema.metadata[schema.METADATA_KEY])
    if mutate_meta:
        mutate_meta(meta)
    if mutate_table:
        table = mutate_table(table)
    table = table.replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()})
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    return path


def set_value(column, row, value, type_=None):
    def mutate(table):
        values = table.column(column).to_pylist()
        values[row] = value
        index = table.schema.get_field_index(column)
        return table.set_column(index, column, pa.array(values, type_ or table.schema.field(column).type))

    return mutate


@pytest.mark.parametrize(
    ("mutate_table", "mutate_meta", "field", "row"),
    [
        (set_value(schema.SPAN_END, 1, 0.0), None, "span_end", 1),
        (set_value(schema.SPAN_START, 0, float("nan")), None, "span_start", 0),
        (set_value(schema.CLIP_UUID, 2, "../../etc/passwd"), None, "clip_uuid", 2),
        (set_value(schema.MP4, 1, b"definitely not a video"), None, "mp4", 1),
        (set_value(schema.EXTRA_METADATA, 0, "{not json"), None, "extra_metadata", 0),
        (set_value(schema.EXTRA_METADATA, 0, '{"clip_location": "/etc"}'), None, "extra_metadata", 0),
        (set_value(schema.CHUNK_INDEX, 2, 5), None, "chunk_index", 2),
        (None, lambda m: m.update(format_version=schema.FORMAT_VERSION + 1), "clip_assets.format_version", None),
        (None, lambda m: m.update(source_video=""), "clip_assets.source_video", None),
        (None, lambda m: m["video"].update(width="wide"), "clip_assets.video.width", None),
        (lambda t: t.drop_columns([schema.SPAN_END]), None, "span_end", None),
        (
            lambda t: t.set_column(1, schema.CHUNK_INDEX, pa.array(["0", "0", "0"])),
            None,
            "chunk_index",
            None,
        ),
    ],
)
def test_bad_values_name_file_row_and_field(tmp_path, mutate_table, mutate_meta, field, row, reliability):
    path = rewrite(tmp_path, mutate_table, mutate_meta)
    with pytest.raises(ProcessedVideoError) as caught, ProcessedVideoReader(str(path), "inbox/bad.parquet") as reader:
        inspect_video(reader)
    error = caught.value
    assert error.file == "inbox/bad.parquet"
    assert error.field == field
    assert error.row == row
    assert "inbox/bad.parquet" in str(error) and field in str(error)
    reliability.record(
        "bad input", f"malformed {field}", tried=1, handled=1, nothing_lost="rejected by the reader before any write"
    )


def test_duplicate_clip_ids_are_rejected(tmp_path):
    clips = make_clips(3)
    clips[2] = replace(clips[2], uuid=clips[0].uuid)
    path = write_video(tmp_path / "v.parquet", clips)
    with pytest.raises(ProcessedVideoError, match="duplicate clip id, first seen in row 0") as caught:
        inspect_video(ProcessedVideoReader(str(path), "v"))
    assert caught.value.row == 2


def test_non_finite_embedding_and_mixed_dimensions_are_rejected(tmp_path):
    clips = make_clips(2)
    clips[1].embeddings["cosmos-embed1"] = np.array([1.0, np.inf] + [0.0] * 6, dtype=np.float32)
    with pytest.raises(ProcessedVideoError, match="non-finite") as caught:
        inspect_video(ProcessedVideoReader(str(write_video(tmp_path / "a.parquet", clips)), "a"))
    assert caught.value.field == "embeddings[cosmos-embed1]"
    clips[1].embeddings["cosmos-embed1"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(ProcessedVideoError, match="dimension 4 differs from 8"):
        inspect_video(ProcessedVideoReader(str(write_video(tmp_path / "b.parquet", clips)), "b"))


def test_window_errors_name_the_window(tmp_path):
    clips = make_clips(2)
    clips[1].windows[1].end_frame = 2
    with pytest.raises(ProcessedVideoError, match="before start_frame") as caught:
        inspect_video(ProcessedVideoReader(str(write_video(tmp_path / "a.parquet", clips)), "a"))
    assert caught.value.field == "windows[1].end_frame"
    clips[1].windows[1].end_frame = 8
    clips[1].windows[0].webp = tiny_mp4()
    with pytest.raises(ProcessedVideoError, match="not a WebP"):
        inspect_video(ProcessedVideoReader(str(write_video(tmp_path / "b.parquet", clips)), "b"))


def test_unreadable_file_and_truncated_footer(tmp_path):
    path = write_video(tmp_path / "v.parquet", make_clips(2))
    data = path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProcessedVideoError, match="not a readable Parquet file") as caught:
        ProcessedVideoReader(str(tmp_path / "cut.parquet"), "cut.parquet")
    assert caught.value.field == "<parquet footer>"


def test_unknown_columns_are_reported_not_fatal(tmp_path):
    table = pq.read_table(write_video(tmp_path / "v.parquet", make_clips(2)))
    table = table.append_column("upstream_debug", pa.array(["x", "y"]))
    pq.write_table(table, tmp_path / "extra.parquet")
    with ProcessedVideoReader(str(tmp_path / "extra.parquet"), "extra") as reader:
        assert reader.unknown_columns == ["upstream_debug"]
        assert inspect_video(reader).num_clips == 2


def test_writer_publishes_atomically(tmp_path):
    def clips_then_crash():
        yield from make_clips(2)
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        from clip_assets.contract import write_processed_video

        write_processed_video(tmp_path / "v.parquet", video_info(), clips_then_crash())
    assert list(tmp_path.iterdir()) == []


def test_metadata_can_be_given_after_the_clips(tmp_path):
    """Producers whose counters are known only at the end still write the file once, streaming."""
    from clip_assets.contract import write_processed_video

    written = []

    def clips():
        for clip in make_clips(3, filtered=[1]):
            written.append(clip.uuid)
            yield clip

    def info():
        assert len(written) == 3  # asked for only after the last clip
        return video_info(num_clips=3)

    path = write_processed_video(tmp_path / "v.parquet", info, clips())
    with ProcessedVideoReader(str(path), "v") as reader:
        assert reader.info == video_info(num_clips=3)
        assert inspect_video(reader).num_filtered == 1


def test_whole_floats_are_accepted_for_integer_video_fields(tmp_path):
    def mutate(meta):
        meta["video"].update(width=64.0, height=48.0)

    path = rewrite(tmp_path, mutate_meta=mutate)
    with ProcessedVideoReader(str(path), "v") as reader:
        assert (reader.info.width, reader.info.height) == (64, 48)
        assert isinstance(reader.info.width, int)
    path = rewrite(tmp_path, mutate_meta=lambda meta: meta["video"].update(width=64.5))
    with pytest.raises(ProcessedVideoError, match="non-negative integer"):
        ProcessedVideoReader(str(path), "v")
