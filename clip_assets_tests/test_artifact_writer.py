import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from clip_assets import layout
from clip_assets.engine.manifest import ManifestEntry, PartitionManifest
from clip_assets.engine.writer import ArtifactWriter, DuplicateArtifactError, OutputConflictError
from clip_assets.families import Artifact
from clip_assets.storage import LocalStorage


def artifacts(**contents: bytes) -> list[Artifact]:
    return [Artifact(f"clips/{name}.mp4", data) for name, data in contents.items()]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """The same writer test on local disk and on the S3 endpoint."""
    if request.param == "local":
        return LocalStorage(tmp_path / "out")
    return request.getfixturevalue("s3").storage("out")


def snapshot(root):
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def test_writes_artifacts_and_a_manifest_with_their_hashes(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path), max_workers=3)
    result = writer.write("clip_files", "cam/a.mp4", "inbox/a", artifacts(a=b"A" * 100, b=b"B"))
    assert (tmp_path / "clips/a.mp4").read_bytes() == b"A" * 100
    assert result.written == 2 and result.skipped == 0 and result.bytes_written == 101
    manifest = json.loads((tmp_path / layout.manifest_key("clip_files", "cam/a.mp4")).read_text())
    entry = manifest["artifacts"]["clips/a.mp4"]
    stat = (tmp_path / "clips/a.mp4").stat()
    assert entry == {
        "sha256": hashlib.sha256(b"A" * 100).hexdigest(),
        "size": 100,
        "fingerprint": f"100:{stat.st_mtime_ns}",
    }
    assert manifest["partition_key"] == "cam/a.mp4"
    assert not list((tmp_path / "_clip_assets/staging").iterdir())


def test_rerun_with_identical_content_rewrites_nothing(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"A", b=b"B"))
    before = snapshot(tmp_path / "clips")
    result = writer.write("clip_files", "p", "s", artifacts(a=b"A", b=b"B"))
    assert (result.written, result.skipped) == (0, 2)
    assert snapshot(tmp_path / "clips") == before


def test_changed_input_replaces_changed_and_removes_stale(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"A", b=b"B", c=b"C"))
    result = writer.write("clip_files", "p", "s", artifacts(a=b"A", b=b"B2"))
    assert (result.written, result.skipped, result.removed) == (1, 1, ["clips/c.mp4"])
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["a.mp4", "b.mp4"]
    assert (tmp_path / "clips/b.mp4").read_bytes() == b"B2"


def test_new_content_of_the_same_size_replaces_the_old_on_every_backend(storage):
    """Equal sizes prove nothing: only the recorded sha256 (or the one S3 keeps) may skip a write."""
    writer = ArtifactWriter(storage)
    writer.write("clip_files", "p", "s", artifacts(a=b"AAAA"))
    second = writer.write("clip_files", "p", "s", artifacts(a=b"BBBB"))
    assert storage.read("clips/a.mp4") == b"BBBB"
    assert (second.written, second.skipped) == (1, 0)
    assert writer.load_manifest("clip_files", "p").entries["clips/a.mp4"].sha256 == sha256(b"BBBB")

    storage.delete(layout.manifest_key("clip_files", "p"))  # as after a run killed before its manifest
    third = writer.write("clip_files", "p", "s", artifacts(a=b"CCCC"))
    assert storage.read("clips/a.mp4") == b"CCCC"
    assert (third.written, third.skipped) == (1, 0)


def test_an_object_replaced_behind_the_manifest_is_rewritten_even_when_nothing_changed(storage):
    """The unchanged-input shortcut trusts a stat, so it must compare fingerprints, not sizes alone."""
    writer = ArtifactWriter(storage)
    writer.write("clip_files", "p", "s", artifacts(a=b"AAAA"), output_version="v1")
    recorded = writer.load_manifest("clip_files", "p").entries["clips/a.mp4"]
    storage.put("clips/a.mp4", b"ZZZZ")  # a hand copy, or another tool, with the same size
    if isinstance(storage, LocalStorage):  # a clock too coarse to tell the two writes apart is not the point
        stat = (Path(storage.root) / "clips/a.mp4").stat()
        os.utime(Path(storage.root) / "clips/a.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert storage.stat("clips/a.mp4").fingerprint != recorded.fingerprint
    result = writer.write("clip_files", "p", "s", artifacts(a=b"AAAA"), output_version="v1")
    assert not result.unchanged_input and result.written == 1
    assert storage.read("clips/a.mp4") == b"AAAA"


def test_the_manifest_digest_covers_every_key_and_its_content():
    """The digest is the `manifest_sha256` users compare runs by: equal keys with other bytes must differ."""

    def manifest(**contents: bytes) -> PartitionManifest:
        entries = {key: ManifestEntry(sha256(data), len(data)) for key, data in contents.items()}
        return PartitionManifest("clip_files", "p", entries=entries)

    one = manifest(a=b"AAAA", b=b"B")
    assert one.digest == sha256(f"a\0{sha256(b'AAAA')}\nb\0{sha256(b'B')}\n".encode())
    assert manifest(a=b"BBBB", b=b"B").digest != one.digest
    assert manifest(a=b"AAAA", c=b"B").digest != one.digest
    assert manifest(b=b"B", a=b"AAAA").digest == one.digest  # order of insertion is not content


def test_a_file_damaged_on_disk_is_rewritten(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"AAAA"))
    (tmp_path / "clips/a.mp4").write_bytes(b"AA")
    assert writer.write("clip_files", "p", "s", artifacts(a=b"AAAA")).written == 1
    assert (tmp_path / "clips/a.mp4").read_bytes() == b"AAAA"


def test_stale_keys_still_owned_by_another_partition_are_kept(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "one", "s", artifacts(shared=b"S", a=b"A"))
    writer.write("clip_files", "two", "s", artifacts(shared=b"S"))
    result = writer.write("clip_files", "one", "s", artifacts(a=b"A"))
    assert result.kept_shared == ["clips/shared.mp4"] and result.removed == []
    assert (tmp_path / "clips/shared.mp4").exists()


def test_duplicate_keys_in_one_partition_fail_before_the_manifest_changes(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"A", z=b"Z"))
    with pytest.raises(DuplicateArtifactError):
        writer.write("clip_files", "p", "s", [Artifact("clips/a.mp4", b"1"), Artifact("clips/a.mp4", b"2")])
    assert set(writer.load_manifest("clip_files", "p").entries) == {"clips/a.mp4", "clips/z.mp4"}
    assert (tmp_path / "clips/z.mp4").exists()


def test_a_failing_stream_keeps_the_previous_manifest_and_files(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"A", b=b"B"))

    def broken():
        yield Artifact("clips/a.mp4", b"A")
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        writer.write("clip_files", "p", "s", broken())
    assert set(writer.load_manifest("clip_files", "p").entries) == {"clips/a.mp4", "clips/b.mp4"}
    assert (tmp_path / "clips/b.mp4").read_bytes() == b"B"


def test_unsafe_keys_are_refused(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path / "out"))
    with pytest.raises(ValueError, match="unsafe output key"):
        writer.write("clip_files", "p", "s", [Artifact("../escape.mp4", b"x")])
    assert not (tmp_path / "escape.mp4").exists()


def test_many_artifacts_through_a_small_pool(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path), max_workers=2)
    many = (Artifact(f"previews/{i:04d}.webp", bytes([i % 256]) * 10) for i in range(600))
    result = writer.write("clip_previews", "p", "s", many)
    assert result.written == 600
    assert len(list((tmp_path / "previews").iterdir())) == 600


def test_an_unreadable_manifest_is_named_not_guessed(tmp_path):
    from clip_assets.engine.manifest import ManifestError

    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"A"))
    manifest = tmp_path / layout.manifest_key("clip_files", "p")
    manifest.write_text("{not json")
    with pytest.raises(ManifestError, match=r"unreadable manifest") as caught:
        writer.write("clip_files", "p", "s", artifacts(a=b"A"))
    assert str(manifest) in str(caught.value)
    assert (tmp_path / "clips/a.mp4").read_bytes() == b"A"


def test_files_written_before_a_failure_are_owned_and_removed_later(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path), max_workers=1)
    writer.write("clip_files", "p", "s", artifacts(a=b"A"))

    def fails_after_a_new_file():
        yield Artifact("clips/new.mp4", b"N")
        yield Artifact("clips/a.mp4", b"A2")
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        writer.write("clip_files", "p", "s", fails_after_a_new_file())
    partial = writer.load_manifest("clip_files", "p")
    for key, entry in partial.entries.items():  # the manifest describes the files as they are
        assert hashlib.sha256((tmp_path / key).read_bytes()).hexdigest() == entry.sha256
    assert "clips/new.mp4" in partial.entries

    result = writer.write("clip_files", "p", "s", artifacts(a=b"A"))
    assert result.removed == ["clips/new.mp4"] and not (tmp_path / "clips/new.mp4").exists()
    assert (tmp_path / "clips/a.mp4").read_bytes() == b"A"


def test_a_file_touched_by_hand_is_rewritten_even_at_the_same_size(tmp_path):
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "p", "s", artifacts(a=b"AAAA"))
    target = tmp_path / "clips/a.mp4"
    target.write_bytes(b"ZZZZ")
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert writer.write("clip_files", "p", "s", artifacts(a=b"AAAA")).written == 1
    assert target.read_bytes() == b"AAAA"


def test_an_existing_file_without_a_manifest_entry_is_replaced(tmp_path):
    """A file the manifest does not know (a killed run's, a hand copy) may hold anything: rewrite it."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips/a.mp4").write_bytes(b"old")
    result = ArtifactWriter(LocalStorage(tmp_path)).write("clip_files", "p", "s", artifacts(a=b"new"))
    assert result.written == 1 and (tmp_path / "clips/a.mp4").read_bytes() == b"new"


def test_on_s3_identical_content_is_recognised_without_a_manifest(s3):
    """The sha256 kept with each object proves identity: a lost manifest costs no upload."""
    storage = s3.storage("out")
    writer = ArtifactWriter(storage)
    writer.write("clip_files", "p", "s", artifacts(a=b"A" * 1000, b=b"B"))
    storage.delete(layout.manifest_key("clip_files", "p"))
    s3.proxy.reset_counts()
    result = writer.write("clip_files", "p", "s", artifacts(a=b"A" * 1000, b=b"B2"))
    assert (result.written, result.skipped) == (1, 1)
    uploads = [r.path for r in s3.proxy.requests if r.operation == "PutObject" and r.path.endswith(".mp4")]
    assert len(uploads) == 3  # a: refused by If-None-Match; b: refused, then replaced
    assert storage.read("clips/a.mp4") == b"A" * 1000 and storage.read("clips/b.mp4") == b"B2"
    s3.proxy.reset_counts()
    again = writer.write("clip_files", "p", "s", artifacts(a=b"A" * 1000, b=b"B2"))
    assert (again.written, again.skipped) == (0, 2)
    assert [
        r.path for r in s3.proxy.requests if r.operation == "PutObject" and "/_clip_assets/locks/" not in r.path
    ] == []


def _race(writer_factory, versions):
    """Writers of one partition, each with its own content, started at once."""
    barrier = threading.Barrier(len(versions))
    errors = []

    def write(content):
        writer = writer_factory()
        barrier.wait()
        try:
            writer.write("clip_files", "p", "s", (Artifact(f"clips/{i:03d}.mp4", content) for i in range(40)))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(content,)) for content in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _one_version_throughout(storage, versions):
    manifest = ArtifactWriter(storage).load_manifest("clip_files", "p")
    contents = {storage.read(key) for key in manifest.entries}
    assert len(contents) == 1 and contents <= set(versions)  # never a mix of two runs
    for key, entry in manifest.entries.items():
        assert hashlib.sha256(storage.read(key)).hexdigest() == entry.sha256


def test_concurrent_writers_of_one_partition_never_interleave_locally(tmp_path, reliability):
    versions = [b"first run" * 100, b"second run" * 100, b"third run" * 100]
    _race(lambda: ArtifactWriter(LocalStorage(tmp_path), max_workers=4), versions)
    _one_version_throughout(LocalStorage(tmp_path), versions)
    reliability.record(
        "fault",
        "three runs writing one partition at once (local)",
        tried=1,
        handled=1,
        nothing_lost="one run's version throughout, manifest matching every file",
    )


def test_concurrent_writers_of_one_partition_never_interleave_on_a_store(store, reliability):
    """The lease of conditional writes on S3, Azure and GCS."""
    versions = [b"first run" * 100, b"second run" * 100]
    _race(lambda: ArtifactWriter(store.storage("out"), max_workers=4), versions)
    _one_version_throughout(store.storage("out"), versions)
    assert store.storage("out").stat(layout.lock_key("p")) is None
    reliability.record(
        "fault",
        f"two runs writing one partition at once ({store.label} lease)",
        tried=1,
        handled=1,
        nothing_lost="one run's version throughout, manifest matching every object",
    )


def test_a_partition_never_overwrites_another_partitions_file(tmp_path, reliability):
    """Two inputs mapping to one output path (a reused clip id, say): the second is refused, the first kept."""
    writer = ArtifactWriter(LocalStorage(tmp_path))
    writer.write("clip_files", "first", "s", artifacts(a=b"first's clip", b=b"B"))
    with pytest.raises(OutputConflictError, match=r"clips/a\.mp4 already holds other content for partition 'first'"):
        writer.write("clip_files", "second", "s", artifacts(a=b"second's clip"))
    assert (tmp_path / "clips/a.mp4").read_bytes() == b"first's clip"
    same = writer.write("clip_files", "third", "s", artifacts(a=b"first's clip"))  # identical bytes: shared
    assert (same.written, same.skipped) == (0, 1)
    reliability.record(
        "bad input",
        "two inputs mapping to one output path",
        tried=1,
        handled=1,
        nothing_lost="the first partition's file byte for byte",
    )
