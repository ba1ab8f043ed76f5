"""A clip id belongs to one partition: claimed atomically before any of its files, released with the clip."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError
from clip_assets.engine.claims import claim_clips, release_clips
from clip_assets.engine.inspection import VideoInspection
from clip_assets.families.base import ClipFacts
from clip_assets.storage import LocalStorage, Storage
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
    claim_clips(storage, "first", "first.parquet", info, _inspection(*ids))  # a re-run
    with pytest.raises(ProcessedVideoError, match=rf"row 1 \(clip {ids[1]}\).*claimed by partition 'first'"):
        claim_clips(storage, "second", "second.parquet", info, _inspection(make_clips(4)[3].uuid, ids[1]))
    assert storage.stat(layout.clip_claim_key(make_clips(4)[3].uuid)) is None  # the refused run took nothing
    release_clips(storage, "second", ids)  # not its claims: kept
    assert all(storage.stat(layout.clip_claim_key(clip)) is not None for clip in ids)
    release_clips(storage, "first", ids[:1])
    assert storage.stat(layout.clip_claim_key(ids[0])) is None
    claim_clips(storage, "second", "second.parquet", info, _inspection(ids[0]))


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
