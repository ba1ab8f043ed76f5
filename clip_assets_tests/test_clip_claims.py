"""A clip id belongs to one partition: claimed atomically before any of its files, released with the clip."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError
from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.claims import claim_clips, release_clips
from clip_assets.engine.inspection import VideoInspection
from clip_assets.engine.partition import WriteJob, write_partition
from clip_assets.engine.removal import remove_partition
from clip_assets.engine.writer import ArtifactWriter
from clip_assets.families import FAMILIES
from clip_assets.families.base import ClipFacts
from clip_assets.settings import WriterSettings
from clip_assets.storage import LocalStorage, Storage, StorageError
from clip_assets_tests.support.factories import make_clips, video_info, write_video
from clip_assets_tests.support.partition_process import BARRIER_VAR, release_together, spawn

ROUNDS = 10
STORE_ROUNDS = 3


def two_videos_sharing_a_clip_id(inbox: Path) -> tuple[str, dict[str, list]]:
    """`a.mp4` and `b.mp4`, each two clips of its own bytes, b's second clip using a's first clip id."""
    a = make_clips(2, source_video="/videos/a.mp4")
    b = make_clips(3, source_video="/videos/b.mp4")[1:]  # other bytes than a's clips (other shades)
    b[1].uuid = a[0].uuid
    for row, clip in enumerate(b):
        clip.row = row
    write_video(inbox / "a.mp4.parquet", a, source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", b, source_video="/videos/b.mp4")
    return a[0].uuid, {"a.mp4": a, "b.mp4": b}


def race_for_one_clip_id(
    tmp_path: Path,
    inbox: Path,
    rounds: int,
    storage_of: Callable[[int], Storage],
    env: dict[str, str] | None = None,
) -> None:
    """`rounds` times, `a.mp4` and `b.mp4` materialized by two processes released at one moment into a
    fresh output (`storage_of(round)`): exactly one owns the shared clip id, the other wrote nothing."""
    shared, clips = two_videos_sharing_a_clip_id(inbox)
    for round_number in range(rounds):
        storage = storage_of(round_number)
        barrier = tmp_path / f"barrier {round_number}"
        barrier.mkdir()
        runs = {
            key: spawn(
                inbox,
                storage.root,
                tmp_path / f"home {round_number} {key}",
                key,
                2,
                {**(env or {}), BARRIER_VAR: str(barrier)},
            )
            for key in ("a.mp4", "b.mp4")
        }
        release_together(barrier, list(runs.values()))  # both past their imports, then both write
        codes = {key: run.wait(timeout=300) for key, run in runs.items()}
        printed = {key: run.stdout.read() for key, run in runs.items()}
        winners = [key for key, code in codes.items() if code == 0]
        assert len(winners) == 1, f"round {round_number}: {codes} {printed}"
        (owner,) = winners
        (other,) = set(runs) - {owner}
        message = printed[other]
        assert shared in message and repr(owner) in message and f"{other}.parquet" in message, message

        claim = json.loads(storage.read(layout.clip_claim_key(shared)))
        assert claim["partition"] == owner
        metadata = json.loads(storage.read(layout.clip_metadata_key(shared)))
        assert metadata["source_video"] == f"/videos/{owner}"
        for clip in clips[owner]:  # the shared clip id's MP4 is the owner's, byte for byte
            assert storage.read(layout.clip_key(clip.uuid, filtered=False)) == clip.mp4
        # Nothing of the refused partition: no file, no claim, no manifest.
        for clip in clips[other]:
            if clip.uuid != shared:
                assert [i.key for i in storage.list() if clip.uuid in i.key] == []
        assert storage.stat(layout.video_metadata_key(other)) is None
        assert storage.stat(layout.manifest_key("clip_files", other)) is None


def test_two_processes_claiming_one_clip_id_at_once_leave_exactly_one_owner(tmp_path, inbox, reliability):
    race_for_one_clip_id(tmp_path, inbox, ROUNDS, lambda round_number: LocalStorage(tmp_path / f"out {round_number}"))
    reliability.record(
        "fault",
        "two processes materializing two partitions that claim one clip id, started together",
        tried=ROUNDS,
        handled=ROUNDS,
        nothing_lost="exactly one owner, its files byte for byte; the other failed naming the clip id and "
        "the owner, with no file, claim or manifest",
    )


def test_on_a_store_two_processes_claiming_one_clip_id_at_once_leave_exactly_one_owner(
    tmp_path, inbox, store, reliability
):
    """On S3, Azure and GCS, each process configured by the store's standard variables alone."""
    race_for_one_clip_id(
        tmp_path, inbox, STORE_ROUNDS, lambda round_number: store.storage(f"out-{round_number}"), store.env
    )
    reliability.record(
        "fault",
        f"two processes materializing two partitions that claim one clip id, started together ({store.label})",
        tried=STORE_ROUNDS,
        handled=STORE_ROUNDS,
        nothing_lost="exactly one owner, its objects byte for byte; the other failed naming the clip id and "
        "the owner, with no object, claim or manifest",
    )


def _inspection(*clips: str) -> VideoInspection:
    facts = {clip: ClipFacts(row, None, None, frozenset(), frozenset()) for row, clip in enumerate(clips)}
    return VideoInspection(len(facts), len(facts), 0, facts)


def test_a_claim_is_idempotent_for_its_partition_and_released_only_by_it(tmp_path):
    storage = LocalStorage(tmp_path)
    ids = [clip.uuid for clip in make_clips(2)]
    info = video_info()
    claim_clips(storage, "first", "first.parquet", info, _inspection(*ids))
    assert owners(storage, ids) == ["first", "first"]
    claim_clips(storage, "first", "first.parquet", info, _inspection(*ids))  # a re-run
    assert owners(storage, ids) == ["first", "first"]
    with pytest.raises(ProcessedVideoError, match=rf"row 1 \(clip {ids[1]}\).*claimed by partition 'first'"):
        claim_clips(storage, "second", "second.parquet", info, _inspection(make_clips(4)[3].uuid, ids[1]))
    assert storage.stat(layout.clip_claim_key(make_clips(4)[3].uuid)) is None  # the refused run took nothing
    release_clips(storage, "second", ids)  # not its claims: kept
    assert all(storage.stat(layout.clip_claim_key(clip)) is not None for clip in ids)
    release_clips(storage, "first", ids[:1])
    assert storage.stat(layout.clip_claim_key(ids[0])) is None
    claim_clips(storage, "second", "second.parquet", info, _inspection(ids[0]))
    assert owners(storage, ids) == ["second", "first"]


def owners(storage: Storage, clips: list[str]) -> list[str | None]:
    """The partition each clip's claim names, read from the claim documents themselves (None: no claim)."""
    found = []
    for clip in clips:
        key = layout.clip_claim_key(clip)
        found.append(json.loads(storage.read(key))["partition"] if storage.stat(key) is not None else None)
    return found


@pytest.mark.parametrize("held", [True, False], ids=["held by its intent", "found by its create"])
def test_a_refused_run_releases_the_claims_it_took_and_never_its_earlier_ones(tmp_path, held):
    """`first` holds two clips from an earlier run; its re-run adds a new clip and one `second` holds."""
    storage = LocalStorage(tmp_path)
    mine, new, theirs = [clip.uuid for clip in make_clips(2)], make_clips(3)[2].uuid, make_clips(4)[3].uuid
    info = video_info()
    claim_clips(storage, "first", "first.parquet", info, _inspection(*mine))
    claim_clips(storage, "second", "second.parquet", info, _inspection(theirs))
    with pytest.raises(ProcessedVideoError, match=rf"clip id {theirs} is already claimed by partition 'second'"):
        claim_clips(
            storage,
            "first",
            "first.parquet",
            info,
            _inspection(*mine, new, theirs),
            frozenset(mine) if held else frozenset(),
        )
    assert owners(storage, [*mine, new, theirs]) == ["first", "first", None, "second"]


class ClaimWatch(LocalStorage):
    """Local storage that notes, as each file of a clip is deleted, whether the clip's claim is still there;
    with `fail_on`, deleting that key fails (a removal stopped half-way)."""

    def __init__(self, root: Path, clips: set[str], fail_on: str | None = None) -> None:
        super().__init__(root)
        self.clips, self.fail_on = clips, fail_on
        self.deleted: list[tuple[str, bool]] = []

    def delete(self, key: str) -> None:
        clip = next((c for c in self.clips if c in key), None)
        if clip is not None and not key.startswith(layout.CLAIMS):
            self.deleted.append((key, self.stat(layout.clip_claim_key(clip)) is not None))
            if key == self.fail_on:
                raise StorageError(errno.EIO, f"cannot delete {self.root}/{key}: refused by the test")
        super().delete(key)


def write_with(inbox: Path, output: Storage, clips: list) -> None:
    write_video(inbox / "v.mp4.parquet", clips, source_video="/videos/v.mp4")
    job = WriteJob(FAMILIES, LocalStorage(inbox), output, WriterSettings(input_path="/videos"), ValidationLimits())
    outcome = write_partition(job, "v.mp4", ArtifactWriter(job.output), logging.getLogger(__name__))
    assert not outcome.errors, outcome.errors


def test_a_clip_leaving_the_input_keeps_its_claim_until_its_files_are_removed(tmp_path, inbox):
    """Released earlier, another video could claim the id and write files the old ones' removal then deletes."""
    clips = make_clips(3, source_video="/videos/v.mp4")
    gone = clips[1].uuid
    output = ClaimWatch(tmp_path / "out", {gone})
    write_with(inbox, output, clips)
    write_with(inbox, output, [clips[0], clips[2]])
    removed = {key for key, _ in output.deleted}
    assert {layout.clip_key(gone, filtered=False), layout.clip_metadata_key(gone)} <= removed
    assert all(claimed for _, claimed in output.deleted), output.deleted
    assert owners(output, [gone]) == [None]  # released once its files were gone


def test_a_removed_partition_keeps_each_claim_until_its_files_are_removed(tmp_path, inbox):
    clips = make_clips(2, source_video="/videos/v.mp4")
    ids = [clip.uuid for clip in clips]
    write_with(inbox, LocalStorage(tmp_path / "out"), clips)
    stopped = ClaimWatch(tmp_path / "out", set(ids), fail_on=layout.clip_metadata_key(ids[1]))
    with pytest.raises(StorageError, match="refused by the test"):
        remove_partition(stopped, "v.mp4", FAMILIES)
    assert all(claimed for _, claimed in stopped.deleted) and stopped.deleted
    assert owners(stopped, ids) == ["v.mp4", "v.mp4"]  # its files are not all gone: neither are its claims
    again = ClaimWatch(tmp_path / "out", set(ids))
    assert remove_partition(again, "v.mp4", FAMILIES).found
    assert all(claimed for _, claimed in again.deleted) and again.deleted
    assert owners(again, ids) == [None, None]


def test_claims_on_a_store_are_conditional_creates_and_a_held_claim_costs_one_read(store):
    storage = store.storage("out")
    ids = [clip.uuid for clip in make_clips(2)]
    info = video_info()
    claim_clips(storage, "first", "first.parquet", info, _inspection(*ids))
    creates = store.requests(store.operations.writes)
    assert len(creates) == 2 and all(conditional_create(store, r) for r in creates)
    store.proxy.reset_counts()
    claim_clips(storage, "first", "first.parquet", info, _inspection(*ids), held=frozenset(ids))
    # (GCS's client library looks its bucket up in the background, for its own telemetry: not ours.)
    assert {op: n for op, n in store.proxy.counts.items() if op != "GetBucket"} == {store.operations.read: 2}
    with pytest.raises(ProcessedVideoError, match=rf"clip {ids[0]}\).*claimed by partition 'first'"):
        claim_clips(storage, "second", "second.parquet", info, _inspection(ids[0]))


def conditional_create(store, request) -> bool:
    """Whether a write asked to create only: `If-None-Match: *` (S3, Azure), `ifGenerationMatch=0` (GCS)."""
    if store.name == "gcs":
        return "ifGenerationMatch=0" in request.query.split("&")
    return request.headers.get("if-none-match") == "*"


def test_a_video_refused_for_a_clip_another_video_wrote_keeps_its_earlier_claims(tmp_path, inbox, run_partition):
    """b's clip has files but no claim (a tree written before claims existed); a's re-run adds that clip id:
    it is refused by the clip's metadata, and releases only the claim it just took."""
    a = make_clips(2, source_video="/videos/a.mp4")
    b = make_clips(3, source_video="/videos/b.mp4")[2:]
    write_video(inbox / "a.mp4.parquet", a, source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", b, source_video="/videos/b.mp4")
    assert run_partition("a.mp4").success and run_partition("b.mp4").success
    output = LocalStorage(tmp_path / "output")
    output.delete(layout.clip_claim_key(b[0].uuid))
    taken = make_clips(3, source_video="/videos/a.mp4")[2]
    taken.uuid, taken.row = b[0].uuid, 2
    write_video(inbox / "a.mp4.parquet", [*a, taken], source_video="/videos/a.mp4")
    refused = run_partition("a.mp4")
    assert not refused.success
    record = json.loads(output.read(layout.video_error_key("a.mp4")))
    assert "already names a clip of /videos/b.mp4" in record["errors"][0]["message"]
    assert owners(output, [a[0].uuid, a[1].uuid, b[0].uuid]) == ["a.mp4", "a.mp4", None]
