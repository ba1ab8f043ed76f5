"""Nothing of a clip is left behind: not when it is removed from the input, not after a killed run."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from clip_assets import layout
from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.intent import PartitionIntent, load_intent, save_intent
from clip_assets.engine.manifest import load_manifest
from clip_assets.engine.partition import WriteJob, write_partition
from clip_assets.engine.writer import ArtifactWriter
from clip_assets.families import FAMILIES
from clip_assets.settings import WriterSettings
from clip_assets.storage import LocalStorage, ObjectInfo, StorageError, lease
from clip_assets_tests.support.dataset import materialize_partition, unrecorded
from clip_assets_tests.support.factories import make_clips, noise_mp4, write_video
from clip_assets_tests.support.partition_process import SHORT_LEASES, kill_when, short_lease_margins, spawn

REL = "cam1/street walk.mp4"


def everything(root: Path) -> list[str]:
    """Every file and folder under `root`, folders with a trailing '/'."""
    return sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def test_deleting_a_file_removes_the_folders_it_empties_and_no_more(tmp_path):
    storage = LocalStorage(tmp_path / "out")
    storage.put("previews/a/0_4.webp", b"x")
    storage.put("previews/a/4_8.webp", b"x")
    storage.put("processed_videos/cam1/day 2/a.mp4.json", b"{}")
    storage.put("metas/v0/a.json", b"{}")
    storage.delete("previews/a/0_4.webp")
    assert "previews/a/" in everything(Path(storage.root))  # still holds a file
    storage.delete("previews/a/4_8.webp")
    storage.delete("processed_videos/cam1/day 2/a.mp4.json")
    storage.delete("metas/v0/a.json")
    # The families' own folders and the root stay: only what a video or a clip named is gone.
    nemo_tree = [path for path in everything(Path(storage.root)) if not path.startswith(layout.INTERNAL_PREFIX)]
    assert nemo_tree == ["metas/", "metas/v0/", "previews/", "processed_videos/"]
    storage.put("previews/a/0_4.webp", b"y")  # a folder removed behind the instance's back is made again
    assert storage.read("previews/a/0_4.webp") == b"y"


def test_removing_a_clip_from_the_input_leaves_no_file_or_folder_of_it(inbox, output, run_partition):
    clips = make_clips(3)
    write_video(inbox / f"{REL}.parquet", clips)
    assert run_partition(REL).success
    gone = clips[1].uuid
    assert f"{layout.preview_prefix(gone)}" in everything(output)
    write_video(inbox / f"{REL}.parquet", [clips[0], clips[2]])
    assert run_partition(REL).success
    assert [path for path in everything(output) if gone in path] == []
    assert layout.preview_prefix(clips[0].uuid) in everything(output)


def test_a_clip_folder_a_killed_run_made_but_never_wrote_into_goes_with_the_clip(inbox, output):
    """Killed between making a clip's `previews/<uuid>/` and publishing into it, a run leaves that folder empty,
    no file in it and no manifest; once the input drops the clip, the next run removes the folder too (CI
    found one after a kill in test_a_run_killed_mid_write_then_a_changed_input_leaves_no_orphan)."""
    clips = make_clips(3, source_video="/videos/v.mp4")
    write_video(inbox / "v.mp4.parquet", clips, source_video="/videos/v.mp4")
    storage = LocalStorage(output)
    job = WriteJob(FAMILIES, LocalStorage(inbox), storage, WriterSettings(input_path="/videos"), ValidationLimits())
    assert not write_partition(job, "v.mp4", ArtifactWriter(storage), logging.getLogger(__name__)).errors
    # What the kill leaves: every key the run meant to write named in its intent, no manifest recording any.
    written = set()
    for family in FAMILIES:
        manifest = load_manifest(storage, family.name, "v.mp4")
        assert manifest is not None
        written |= set(manifest.entries)
        storage.delete(layout.manifest_key(family.name, "v.mp4"))
    save_intent(storage, PartitionIntent("v.mp4", frozenset(clip.uuid for clip in clips), frozenset(written)))
    dropped = clips[0]
    folder = (output / layout.preview_key(dropped.uuid, 0, 1)).parent
    for path in folder.iterdir():
        path.unlink()  # killed before its previews were published: the folder is all there is of them
    write_video(inbox / "v.mp4.parquet", clips[1:], source_video="/videos/v.mp4")
    assert not write_partition(job, "v.mp4", ArtifactWriter(storage), logging.getLogger(__name__)).errors
    assert [path for path in everything(output) if dropped.uuid in path] == []


def test_a_run_killed_mid_write_then_a_changed_input_leaves_no_orphan(tmp_path, inbox, instance, reliability):
    """The killed run wrote clips its manifest never recorded; the input then drops them. The next run
    finds them in the partition's intent record and removes them, with their claims."""
    clips = make_clips(10, source_video="/videos/v.mp4")
    for index, clip in enumerate(clips):
        clip.mp4 = noise_mp4(1_000_000, seed=index)
    write_video(inbox / "v.mp4.parquet", clips, source_video="/videos/v.mp4")
    output = tmp_path / "output"
    run = spawn(inbox, str(output), tmp_path / "home", "v.mp4", 1)
    kill_when(run, lambda: (output / "clips").is_dir() and len(list((output / "clips").iterdir())) >= 3)
    storage = LocalStorage(output)
    orphaned = unrecorded(storage)
    assert any(key.startswith(layout.CLIPS) for key in orphaned), orphaned  # what the kill left behind

    kept = clips[-2:]  # the input changes: the clips the killed run wrote are gone from it
    write_video(inbox / "v.mp4.parquet", kept, source_video="/videos/v.mp4")
    assert materialize_partition(instance, "v.mp4", str(inbox), str(output)).success
    assert unrecorded(storage) == []
    dropped = {clip.uuid for clip in clips[:-2]}
    assert [path for path in everything(output) if any(uuid in path for uuid in dropped)] == []
    assert {i.key for i in storage.list(layout.CLIP_CLAIMS)} == {layout.clip_claim_key(c.uuid) for c in kept}
    reliability.record(
        "fault",
        "SIGKILL mid-write, then a changed input (local disk)",
        tried=1,
        handled=1,
        nothing_lost="the re-run left no key that no manifest records, no file, folder or claim of a dropped clip",
    )


@pytest.mark.timeout(600)  # the re-run waits out the killed run's lease (SHORT_LEASES)
def test_on_s3_a_killed_run_then_a_changed_input_leaves_no_orphan(
    tmp_path, inbox, s3, instance, reliability, monkeypatch
):
    clips = make_clips(6, source_video="/videos/v.mp4")
    for index, clip in enumerate(clips):
        clip.mp4 = noise_mp4(1_000_000, seed=index)
    write_video(inbox / "v.mp4.parquet", clips, source_video="/videos/v.mp4")
    env = {**SHORT_LEASES, "AWS_ENDPOINT_URL_S3": s3.proxy.url, "CLIP_ASSETS_S3_ADDRESSING_STYLE": "path"}
    # The re-run is this process's: it takes the killed child's short lease over with the children's margin.
    monkeypatch.setattr(lease, "CLOCK_SKEW_S", short_lease_margins()[1])
    run = spawn(inbox, s3.url("out"), tmp_path / "home", "v.mp4", 1, env)
    storage = s3.storage("out")
    clip_puts = f"/out/{layout.CLIPS}"
    kill_when(run, lambda: sum(r.operation == "PutObject" and clip_puts in r.path for r in s3.proxy.requests) >= 2)
    assert any(key.startswith(layout.CLIPS) for key in unrecorded(storage))

    kept = clips[-2:]
    write_video(inbox / "v.mp4.parquet", kept, source_video="/videos/v.mp4")
    assert materialize_partition(instance, "v.mp4", str(inbox), s3.url("out"), s3=s3.connection).success
    assert unrecorded(storage) == []
    dropped = {clip.uuid for clip in clips[:-2]}
    assert [key for key in s3.keys("out/") if any(uuid in key for uuid in dropped)] == []
    reliability.record(
        "fault",
        "SIGKILL mid-upload, then a changed input (S3)",
        tried=1,
        handled=1,
        nothing_lost="the re-run left no object that no manifest records, no object or claim of a dropped clip",
    )


class SettleRefused(LocalStorage):
    """Local storage that refuses the first write settling an intent record (one naming no keys), as an
    S3 outage beyond the retries would, after every family's manifest is recorded."""

    refusals = 1

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        if key.startswith(layout.INTENTS) and json.loads(bytes(data))["keys"] == [] and self.refusals:
            self.refusals -= 1
            raise StorageError(errno.EIO, f"cannot write {self.root}/{key}: refused by the test")
        return super().put(key, data, sha256)


def test_an_intent_that_cannot_be_settled_fails_the_partition_and_the_retry_settles_it(inbox, output):
    """Reported as written, the partition would never run again and its record would keep naming keys."""
    write_video(inbox / f"{REL}.parquet", make_clips(2))
    job = WriteJob(
        FAMILIES, LocalStorage(inbox), SettleRefused(output), WriterSettings(input_path="/videos"), ValidationLimits()
    )
    log = logging.getLogger(__name__)
    first = write_partition(job, REL, ArtifactWriter(job.output), log)
    assert not first.results and set(first.errors) == {family.name for family in FAMILIES}
    assert "refused by the test" in str(first.errors["clip_files"])
    unsettled = load_intent(job.output, REL)
    assert unsettled is not None and unsettled.keys  # every family's manifest is there, the record is not settled
    assert all(job.output.stat(layout.manifest_key(family.name, REL)) for family in FAMILIES)
    assert job.output.stat(layout.video_error_key(REL)) is not None

    again = write_partition(job, REL, ArtifactWriter(job.output), log)
    assert not again.errors and set(again.results) == {family.name for family in FAMILIES}
    settled = load_intent(job.output, REL)
    assert settled is not None and settled.keys == frozenset() and len(settled.clips) == 2
    assert job.output.stat(layout.video_error_key(REL)) is None
