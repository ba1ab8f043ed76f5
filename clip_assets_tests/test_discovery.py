import os

from clip_assets.engine.discovery import DiscoveryCursor, discover
from clip_assets.engine.inbox import is_candidate
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.factories import write_video


def publish(inbox, relative, mtime_ns=None, **options):
    path = write_video(inbox / relative, **options)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_finds_complete_files_and_skips_incomplete_hidden_and_internal(tmp_path):
    publish(tmp_path, "cam1/a b.mp4.parquet", num_clips=1)
    publish(tmp_path, "x...y.parquet", num_clips=1)
    good = (tmp_path / "cam1/a b.mp4.parquet").read_bytes()
    (tmp_path / "cam1/half.mp4.parquet").write_bytes(good[: len(good) // 2])
    (tmp_path / "cam1/.c.mp4.parquet.tmp").write_bytes(good)
    (tmp_path / "_clip_assets").mkdir()
    (tmp_path / "_clip_assets/x.parquet").write_bytes(good)
    result = discover(LocalStorage(tmp_path))
    assert [v.partition_key for v in result.videos] == ["cam1/a b.mp4", "x%2E%2E%2Ey"]
    assert result.incomplete == ["cam1/half.mp4.parquet"]


def test_cursor_makes_the_next_pass_incremental(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(tmp_path, "a.parquet", mtime_ns=1_000, num_clips=1)
    publish(tmp_path, "b.parquet", mtime_ns=2_000, num_clips=1)
    first = discover(storage)
    assert len(first.videos) == 2
    assert discover(storage, first.cursor).videos == []

    publish(tmp_path, "c.parquet", mtime_ns=2_000, num_clips=1)  # same mtime as the newest seen
    publish(tmp_path, "a.parquet", mtime_ns=3_000, num_clips=2)  # rewritten
    second = discover(storage, first.cursor)
    assert [v.key for v in second.videos] == ["a.parquet", "c.parquet"]
    assert second.videos[0].fingerprint != first.videos[0].fingerprint
    assert discover(storage, DiscoveryCursor.parse(second.cursor.to_str())).videos == []


def test_an_incomplete_file_is_found_once_it_completes(tmp_path):
    storage = LocalStorage(tmp_path)
    path = publish(tmp_path, "a.parquet", num_clips=1)
    data = path.read_bytes()
    path.write_bytes(data[:100])
    first = discover(storage)
    assert first.videos == [] and first.incomplete == ["a.parquet"]
    path.write_bytes(data)
    assert [v.key for v in discover(storage, first.cursor).videos] == ["a.parquet"]


def test_candidates():
    assert is_candidate("cam/a.mp4.parquet")
    assert not is_candidate("cam/.a.mp4.parquet")
    assert not is_candidate("_clip_assets/x.parquet")
    assert not is_candidate("cam/a.mp4")


def test_a_file_that_turns_up_late_with_an_older_time_is_still_found(tmp_path):
    """A rename after a listing keeps the time of its last write; an S3 multipart upload may be dated
    by its start. Within the look-back window such a file is found; the cursor stays bounded."""
    storage = LocalStorage(tmp_path)
    hour = 3600 * 10**9
    publish(tmp_path, "a.parquet", mtime_ns=10 * hour, num_clips=1)
    first = discover(storage)
    publish(tmp_path, "late.parquet", mtime_ns=10 * hour - 10**9, num_clips=1)  # older than a.parquet
    second = discover(storage, first.cursor)
    assert [v.key for v in second.videos] == ["late.parquet"]
    assert discover(storage, second.cursor).videos == []
    assert len(second.cursor.recent) == 2

    publish(tmp_path, "b.parquet", mtime_ns=12 * hour, num_clips=1)  # two hours on: the window moves
    third = discover(storage, second.cursor)
    assert [v.key for v in third.videos] == ["b.parquet"]
    assert len(third.cursor.recent) == 1  # a.parquet and late.parquet fell out of the window
    assert discover(storage, third.cursor).videos == []
