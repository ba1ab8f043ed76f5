import os
import signal
import subprocess
import sys
import threading

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


def test_lock_excludes_other_holders_and_times_out_naming_the_key(tmp_path):
    storage = LocalStorage(tmp_path)
    held = threading.Event()
    release = threading.Event()

    def holder():
        with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=5):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    still_held = r"locks/f/p\.lock: still held by another writer after 0 s"
    with pytest.raises(StorageError, match=still_held), storage.lock("_clip_assets/locks/f/p.lock", timeout_s=0.2):
        pass
    release.set()
    thread.join()
    # Released means free at once: a single non-blocking attempt (no time to wait) takes it.
    with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=0) as lease:
        lease.check()


def test_a_killed_holder_releases_the_lock(tmp_path):
    code = (
        "import sys, time; from clip_assets.storage import LocalStorage\n"
        "with LocalStorage(sys.argv[1]).lock('_clip_assets/locks/x.lock', 5):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageError, match="still held"), storage.lock("_clip_assets/locks/x.lock", timeout_s=0.2):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with storage.lock("_clip_assets/locks/x.lock", timeout_s=1):
        pass
