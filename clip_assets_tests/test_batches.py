"""Batched backfills: many partitions in one run, each written, recorded and failed on its own."""

import json
import logging
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from dagster import AssetKey, materialize

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.contract.limits import ValidationLimits
from clip_assets.definitions import defs
from clip_assets.engine import partition
from clip_assets.engine.batches import write_partitions
from clip_assets.engine.partition import READ_AHEAD_MIN_BYTES, WriteJob
from clip_assets.families import FAMILIES as FAMILY_LIST
from clip_assets.settings import WriterSettings
from clip_assets.storage import LocalStorage, ObjectInfo
from clip_assets_tests.support.dataset import (
    FAMILY_ASSETS,
    PARTITIONS_NAME,
    build_resources,
    family_outputs,
    processed_videos,
)
from clip_assets_tests.support.factories import make_clips, write_video

LOG = logging.getLogger(__name__)
FAMILIES = ["clip_files", "clip_previews", "clip_embeddings", "clip_metadata", "video_summaries"]


def publish(inbox, names, bad=()):
    for name in names:
        clips = make_clips(2, source_video=f"/videos/{name}")
        if name in bad:
            clips[1].span_end = clips[1].span_start  # span_end must come after span_start
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")


def run_range(instance, inbox, output, names):
    instance.add_dynamic_partitions(PARTITIONS_NAME, names)
    return materialize(
        [processed_videos, *FAMILY_ASSETS],
        instance=instance,
        resources=build_resources(str(inbox), str(output), WriterSettingsResource(input_path="/videos")),
        tags={RANGE_START_TAG: names[0], RANGE_END_TAG: names[-1]},
        raise_on_error=False,
    )


def materializations(result):
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        found.setdefault(materialization.asset_key.to_user_string(), {})[materialization.partition] = metadata
    return found


def test_the_backfill_policy_batches_partitions_into_runs():
    for name in FAMILIES:
        policy = defs.resolve_assets_def(name).backfill_policy
        assert policy is not None and policy.max_partitions_per_run == 25


def test_one_run_writes_every_partition_with_its_own_metadata(instance, inbox, output):
    names = ["a.mp4", "b.mp4", "c.mp4"]
    publish(inbox, names)
    result = run_range(instance, inbox, output, names)
    assert result.success
    found = materializations(result)
    for family in FAMILIES:
        assert sorted(found[family]) == names
        for name in names:
            metadata = found[family][name]
            assert metadata["source"] == f"{inbox.resolve()}/{name}.parquet"
            assert metadata["written"] == metadata["artifacts"] > 0
    for name in names:
        video = json.loads((output / f"processed_videos/{name}.json").read_text())
        assert video["video"] == f"/videos/{name}"
    digests = {found["clip_files"][name]["manifest_sha256"] for name in names}
    assert len(digests) == 3  # each partition's own manifest, not one shared value


def test_a_bad_video_fails_only_its_own_partition(instance, inbox, output):
    names = ["a.mp4", "b.mp4", "c.mp4"]
    publish(inbox, names, bad={"b.mp4"})
    result = run_range(instance, inbox, output, names)
    assert not result.success

    # One step writes the five families of the run's partitions; it fails naming the bad partition.
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    for event in failures:
        message = event.event_specific_data.error.cause.message
        assert "1 of 3 partitions failed (the other 2 were written)" in message
        assert "b.mp4: ProcessedVideoError" in message and "b.mp4.parquet, row 1" in message
        assert "span_end" in message

    for family in FAMILIES:
        key = AssetKey(family)
        assert instance.get_materialized_partitions(key) == {"a.mp4", "c.mp4"}
        statuses = instance.get_status_by_partition(key, names, family_outputs.partitions_def)
        assert {name: status.value for name, status in statuses.items()} == {
            "a.mp4": "MATERIALIZED",
            "b.mp4": "FAILED",
            "c.mp4": "MATERIALIZED",
        }
    assert (output / "processed_videos/a.mp4.json").exists() and (output / "processed_videos/c.mp4.json").exists()
    assert not (output / "processed_videos/b.mp4.json").exists()
    assert len(list(output.glob("metas/v0/*.json"))) == 4  # two clips each of a and c


def test_a_missing_input_fails_its_partition_by_name(instance, inbox, output):
    publish(inbox, ["a.mp4"])
    result = run_range(instance, inbox, output, ["a.mp4", "gone.mp4"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.cause.message
    assert "gone.mp4: ProcessedVideoError" in message and "does not exist in the inbox" in message
    assert instance.get_materialized_partitions(AssetKey("clip_files")) == {"a.mp4"}


def test_two_videos_claiming_one_clip_id_in_one_run_leave_the_first_intact(instance, inbox, output, tmp_path):
    """Partitions of a run are written one at a time, every family of one before the next, so the second
    finds the first's clip metadata and is refused before it writes anything."""
    first = make_clips(2, source_video="/videos/a.mp4")
    second = make_clips(2, source_video="/videos/b.mp4")
    second[0].uuid = first[0].uuid
    write_video(inbox / "a.mp4.parquet", first, source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", second, source_video="/videos/b.mp4")
    alone_inbox, alone_output = tmp_path / "alone-inbox", tmp_path / "alone-output"
    alone_inbox.mkdir()
    (alone_inbox / "a.mp4.parquet").write_bytes((inbox / "a.mp4.parquet").read_bytes())
    assert run_range(instance, alone_inbox, alone_output, ["a.mp4"]).success

    result = run_range(instance, inbox, output, ["a.mp4", "b.mp4"])
    assert not result.success
    messages = [
        e.event_specific_data.error.cause.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ]
    assert messages and all("b.mp4" in m and "clip ids must be unique across videos" in m for m in messages)
    assert not (output / "processed_videos/b.mp4.json").exists()
    for family in FAMILIES:
        assert "a.mp4" in instance.get_materialized_partitions(AssetKey(family))
    written = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    for path in alone_output.rglob("*"):
        relative = path.relative_to(alone_output)
        if path.is_file() and "_clip_assets" not in relative.parts and relative.suffix != ".json":
            assert written[relative] == path.read_bytes(), relative
    shared = f"metas/v0/{first[0].uuid}.json"
    assert (
        json.loads((output / shared).read_text())["source_video"]
        == json.loads((alone_output / shared).read_text())["source_video"]
    )


class Recording(LocalStorage):
    """A folder that notes, in order, each read of an inbox file and each manifest it is given."""

    def __init__(self, root: Path, events: list[tuple[str, str]]) -> None:
        super().__init__(root)
        self.events = events

    def read(self, key: str) -> bytes:
        self.events.append(("read", key))
        return super().read(key)

    def open(self, key: str) -> BinaryIO:
        self.events.append(("read", key))
        return super().open(key)

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        self.events.append(("put", key))
        return super().put(key, data, sha256)


def engine_job(inbox: Path, output: Path, events: list[tuple[str, str]]) -> WriteJob:
    storage = Recording(output, events)
    return WriteJob(
        FAMILY_LIST, Recording(inbox, events), storage, WriterSettings(input_path="/videos"), ValidationLimits()
    )


@pytest.mark.parametrize(
    ("read_ahead", "min_bytes", "overlap"), [(True, 0, True), (False, 0, False), (True, READ_AHEAD_MIN_BYTES, False)]
)
def test_the_next_partition_is_read_while_this_one_is_written(
    inbox, output, monkeypatch, read_ahead, min_bytes, overlap
):
    """Read ahead (the default), partition b's input is read before a's last manifest is recorded: reading
    overlaps writing. Off, or for inputs below READ_AHEAD_MIN_BYTES (these are), b waits for a. The trees
    are the same either way."""
    monkeypatch.setattr(partition, "READ_AHEAD_MIN_BYTES", min_bytes)
    names = ["a.mp4", "b.mp4", "c.mp4"]
    for name in names:
        source = f"/videos/{name}"
        write_video(inbox / f"{name}.parquet", make_clips(6, source_video=source), source_video=source)
    assert all(path.stat().st_size < READ_AHEAD_MIN_BYTES for path in inbox.iterdir())
    events: list[tuple[str, str]] = []
    outcomes = list(write_partitions(engine_job(inbox, output, events), names, LOG, read_ahead=read_ahead))
    assert [outcome.partition_key for outcome in outcomes] == names and not any(o.errors for o in outcomes)
    manifests_of_a = {layout.manifest_key(family.name, "a.mp4") for family in FAMILY_LIST}
    last_of_a = max(i for i, (kind, key) in enumerate(events) if kind == "put" and key in manifests_of_a)
    first_of_b = events.index(("read", "b.mp4.parquet"))
    assert (first_of_b < last_of_a) == overlap, events
    assert len(list(output.glob("metas/v0/*.json"))) == 18


def test_an_input_replaced_after_it_was_read_ahead_is_read_again(inbox, output, monkeypatch):
    """b is replaced while a is written, after b was read ahead: b's turn finds the new file and writes it."""
    monkeypatch.setattr(partition, "READ_AHEAD_MIN_BYTES", 0)
    write_video(inbox / "a.mp4.parquet", make_clips(4, source_video="/videos/a.mp4"), source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", make_clips(2, source_video="/videos/b.mp4"), source_video="/videos/b.mp4")
    events: list[tuple[str, str]] = []
    outcomes = write_partitions(engine_job(inbox, output, events), ["a.mp4", "b.mp4"], LOG)
    first = next(outcomes)
    assert first.partition_key == "a.mp4" and not first.errors
    while ("read", "b.mp4.parquet") not in events:  # b's read ahead has begun (it began with a's turn)
        time.sleep(0.01)
    time.sleep(0.2)  # and has ended: it is a 2-clip file
    replaced = make_clips(3, source_video="/videos/b.mp4")
    write_video(inbox / "b.mp4.parquet", replaced, source_video="/videos/b.mp4")
    second = next(outcomes)
    assert second.partition_key == "b.mp4" and not second.errors, second.errors
    video = json.loads((output / "processed_videos/b.mp4.json").read_text())
    assert video["num_total_clips"] == 3
    assert {p.stem for p in output.glob("metas/v0/*.json")} >= {clip.uuid for clip in replaced}
