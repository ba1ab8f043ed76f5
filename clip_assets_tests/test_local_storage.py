import os

import pytest

from clip_assets.storage import LocalStorage, StorageError


def test_put_read_stat_list_delete(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("a/b/c.bin", b"123")
    assert storage.read("a/b/c.bin") == b"123"
    info = storage.stat("a/b/c.bin")
    assert info.size == 3 and info.key == "a/b/c.bin"
    assert [i.key for i in storage.list("a")] == ["a/b/c.bin"]
    storage.delete("a/b/c.bin")
    storage.delete("a/b/c.bin")
    assert storage.stat("a/b/c.bin") is None


def test_put_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("x.bin", b"old")
    storage.put("x.bin", b"new")
    assert storage.read("x.bin") == b"new"
    assert [i.key for i in storage.list() if "staging" in i.key] == []


def test_errors_name_the_key(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(StorageError, match=r"blocker/x\.bin"):
        storage.put("blocker/x.bin", b"1")
    with pytest.raises(StorageError, match=r"missing\.bin"):
        storage.read("missing.bin")


def test_remove_abandoned_clears_leftovers_of_killed_writers_only(tmp_path):
    storage = LocalStorage(tmp_path)
    staging = tmp_path / "_clip_assets/staging"
    staging.mkdir(parents=True)
    (staging / "dead.tmp").write_bytes(b"partial")
    os.utime(staging / "dead.tmp", (0, 0))
    (staging / "live.tmp").write_bytes(b"a concurrent writer is still busy")
    assert storage.remove_abandoned(older_than_s=3600) == 1
    assert not (staging / "dead.tmp").exists() and (staging / "live.tmp").exists()


def test_put_if_absent_never_replaces(tmp_path):
    storage = LocalStorage(tmp_path)
    assert storage.put_if_absent("a/x.bin", b"first").size == 5
    assert storage.put_if_absent("a/x.bin", b"second") is None
    assert storage.read("a/x.bin") == b"first"
    assert list((tmp_path / "_clip_assets/staging").iterdir()) == []
