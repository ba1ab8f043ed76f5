"""WebDataset training shards on real outputs: every passed non-duplicate clip once, read back with `webdataset`
sample by sample (the MP4 decoded with PyAV), byte-identical rebuilds, and a changed dataset rewriting only the
shards it touches."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
import webdataset

from clip_assets import layout
from clip_assets.dataset import clip_index
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.shards import (
    DEFAULT_SHARD_BYTES,
    PlannedShard,
    ShardError,
    ShardSample,
    load_shards_index,
    plan_shards,
    shard_samples,
    sort_key,
    update_shards,
    verify_shards,
)
from clip_assets.engine.removal import remove_partition
from clip_assets.families import FAMILIES
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.curated import (
    TWIN,
    TWIN_OF,
    curate,
    curated_clips,
    index_rows,
    materialize_exports,
    passed_ids,
    write_videos,
)
from clip_assets_tests.support.dataset import (
    materialization_metadata,
    materialize_dataset_tables,
    materialize_partition,
)
from clip_assets_tests.support.factories import write_video


def read_back(urls: list[str]) -> list[dict[str, object]]:
    """Every sample through `webdataset.WebDataset`, in shard order."""
    return list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))


def decoded_frames(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for _ in container.decode(video=0))


def check_samples(samples: list[dict[str, object]], rows: pa.Table, expected: set[str]) -> None:
    by_id = {row[clip_index.CLIP_ID]: row for row in rows.to_pylist()}
    keys = [str(sample["__key__"]) for sample in samples]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    for sample in samples:
        row = by_id[str(sample["__key__"])]
        mp4 = sample["mp4"]
        assert isinstance(mp4, bytes) and hashlib.sha256(mp4).hexdigest() == row[clip_index.MP4_SHA256]
        assert decoded_frames(mp4) == 8
        document = json.loads(sample["json"])  # type: ignore[arg-type]
        assert document[clip_index.CLIP_ID] == row[clip_index.CLIP_ID]
        assert [c["text"] for c in document[clip_index.CAPTIONS]] == [c["text"] for c in row[clip_index.CAPTIONS]]
        assert document[clip_index.CAPTIONS] and clip_index.MP4_URI not in document
        vector = np.load(io.BytesIO(sample["npy"]))  # type: ignore[arg-type]
        assert vector.dtype == np.float32 and np.array_equal(vector, np.asarray(row[clip_index.EMBEDDING], np.float32))


def shard_bytes_for(rows: pa.Table, samples_per_shard: float) -> int:
    """A shard size that holds about `samples_per_shard` of these clips, so a few videos make several shards
    (rounded up to tar's 10 KiB records, which a shard's size is a multiple of)."""
    members = (
        max(sample.size for sample in shard_samples(rows, left_out=[])) * samples_per_shard + 2 * tarfile.BLOCKSIZE
    )
    return math.ceil(members / tarfile.RECORDSIZE) * tarfile.RECORDSIZE


@pytest.fixture
def dataset(inbox: Path, output: Path, instance):
    write_videos(instance, inbox, str(output), ["a.mp4", "b.mp4", "c.mp4"])
    return LocalStorage(output)


def test_every_passed_clip_once_read_back_with_webdataset(dataset, output):
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    shard_bytes = shard_bytes_for(rows, 2.5)
    update = update_shards(dataset, rows, shard_bytes=shard_bytes)

    index = update.index
    assert len(index.shards) >= 3 and update.written == [entry.key for entry in index.shards]
    assert max(entry.samples for entry in index.shards) > 1  # shards of several clips, not one a clip
    members = [clip_id for entry in index.shards for clip_id in entry.clip_ids]
    assert sorted(members) == sorted(passed_ids(rows)) and len(members) == 6
    for entry in index.shards:
        data = (output / entry.key).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.bytes, entry.sha256)
        assert entry.samples == len(entry.clip_ids)
        assert entry.bytes <= shard_bytes or entry.samples == 1
    assert load_shards_index(dataset) == index
    document = json.loads((output / layout.training_shards_index_key()).read_text())
    assert (document["samples"], document["shards_count"]) == (6, len(index.shards))

    samples = read_back([str(output / entry.key) for entry in index.shards])
    check_samples(samples, rows, passed_ids(rows))


def test_tars_are_reproducible_byte_for_byte_in_another_root(dataset, output, tmp_path, instance):
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    first = update_shards(dataset, rows, shard_bytes=shard_bytes_for(rows, 2.5)).index
    infos = []
    for entry in first.shards:
        with tarfile.open(output / entry.key) as archive:
            names = archive.getnames()
            assert names == sorted(names) and len(names) == 3 * entry.samples
            infos += archive.getmembers()
    assert {(info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) for info in infos} == {
        (0, 0, 0, "", "", 0o644)
    }

    other_output = tmp_path / "elsewhere"
    other_inbox = tmp_path / "other-inbox"
    other_inbox.mkdir()
    write_videos(instance, other_inbox, str(other_output), ["c.mp4", "a.mp4", "b.mp4"])
    other = LocalStorage(other_output)
    second = update_shards(other, index_rows(other, ["a.mp4", "b.mp4", "c.mp4"]), shard_bytes=first.shard_bytes).index
    assert [(e.key, e.sha256, e.clip_ids) for e in second.shards] == [
        (e.key, e.sha256, e.clip_ids) for e in first.shards
    ]
    for entry in first.shards:
        assert (output / entry.key).read_bytes() == (other_output / entry.key).read_bytes()

    shutil.rmtree(output / layout.TRAINING_SHARDS)
    rebuilt = update_shards(dataset, rows, shard_bytes=first.shard_bytes)
    assert rebuilt.index == first and len(rebuilt.written) == len(first.shards)


def test_adding_a_video_rewrites_only_the_shards_it_lands_in(dataset, output, inbox, instance):
    before_rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    shard_bytes = shard_bytes_for(before_rows, 2.5)
    before = update_shards(dataset, before_rows, shard_bytes=shard_bytes).index
    stamps = {entry.key: (output / entry.key).stat().st_mtime_ns for entry in before.shards}

    write_videos(instance, inbox, str(output), ["d.mp4"])
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    update = update_shards(dataset, rows, shard_bytes=shard_bytes)
    new_rows = [r for r in rows.to_pylist() if r[clip_index.PARTITION_KEY] == "d.mp4" and r[clip_index.PASSED]]
    new_ids = {r[clip_index.CLIP_ID] for r in new_rows}
    before_by_key = {e.key: e for e in before.shards}
    fresh = [e for e in update.index.shards if e.key not in before_by_key]
    kept = [e for e in update.index.shards if e.key in before_by_key]
    assert fresh and kept
    assert sorted(update.written) == sorted(e.key for e in fresh)
    assert sorted(update.kept) == sorted(e.key for e in kept)
    for entry in kept:  # the same object, never rewritten
        assert before_by_key[entry.key] == entry
        assert (output / entry.key).stat().st_mtime_ns == stamps[entry.key]
    # What was replaced: only shards whose hash range the new video's clips fall in, and their clips moved
    # to the new shards with the new clips.
    replaced = [before_by_key[key] for key in update.removed]
    assert sorted(update.removed) == sorted(set(before_by_key) - {e.key for e in update.index.shards})
    new_keys = [sort_key("d.mp4", clip_id) for clip_id in new_ids]
    for entry in replaced:
        depth, prefix = int(entry.range_name[1:4]), int(entry.range_name[5:], 16)
        assert any(key >> (128 - depth) == prefix for key in new_keys), entry.range_name
    moved = {cid for e in replaced for cid in e.clip_ids} | new_ids
    assert {cid for e in fresh for cid in e.clip_ids} == moved
    assert not any((output / e.key).exists() for e in replaced)
    check_samples(read_back([str(output / e.key) for e in update.index.shards]), rows, passed_ids(rows))

    again = update_shards(dataset, rows, shard_bytes=shard_bytes)
    assert again.written == [] and again.removed == [] and again.index == update.index


def test_a_removed_video_and_duplicates_leave_no_member(dataset, output):
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    shard_bytes = shard_bytes_for(rows, 2.5)
    update_shards(dataset, rows, shard_bytes=shard_bytes)
    b_ids = {r[clip_index.CLIP_ID] for r in rows.to_pylist() if r[clip_index.PARTITION_KEY] == "b.mp4"}
    duplicate = sorted(passed_ids(rows) - b_ids)[0]

    remaining = index_rows(dataset, ["a.mp4", "c.mp4"])
    update = update_shards(dataset, remaining, {duplicate}, shard_bytes=shard_bytes)
    members = {cid for e in update.index.shards for cid in e.clip_ids}
    assert members == passed_ids(remaining) - {duplicate}
    on_disk = sorted(p.name for p in (output / layout.TRAINING_SHARDS).iterdir() if p.suffix == ".tar")
    assert on_disk == sorted(e.key.rsplit("/", 1)[1] for e in update.index.shards)
    check_samples(read_back([str(output / e.key) for e in update.index.shards]), remaining, members)


def test_a_clip_file_newer_than_the_index_is_refused_naming_it(dataset, output):
    rows = index_rows(dataset, ["a.mp4"])
    clip_id = sorted(passed_ids(rows))[0]
    (output / layout.clip_key(clip_id, filtered=False)).write_bytes(b"not the indexed clip")
    with pytest.raises(ShardError, match=rf"clips/{clip_id}\.mp4: clip {clip_id}: content does not match"):
        update_shards(dataset, rows, shard_bytes=1 << 20, strict=True)
    bad = rows.set_column(
        rows.schema.get_field_index(clip_index.MP4_SHA256),
        clip_index.MP4_SHA256,
        pa.array([None] * rows.num_rows, pa.string()),
    )
    with pytest.raises(ShardError, match=r"field 'mp4_sha256' is empty for a passed clip"):
        shard_samples(bad)


def sample(video: str, clip: int, size: int) -> ShardSample:
    clip_id = f"{clip:08x}-0000-4000-8000-000000000000"
    return ShardSample(clip_id, "", "", b"", b"", size, sort_key(video, clip_id))


def members(shards: list[PlannedShard]) -> dict[str, set[str]]:
    return {shard.range_name: {s.clip_id for s in shard.samples} for shard in shards}


def test_the_trie_keeps_every_other_range_when_a_video_comes_or_goes():
    """The rule itself, at a scale the tree tests cannot reach: 300 videos, then one more, then one fewer."""
    videos = {
        f"v{n}.mp4": [sample(f"v{n}.mp4", n * 100 + c, 1000 + 37 * c) for c in range(n % 7 + 1)] for n in range(300)
    }

    def plan(names):
        chosen = sorted((s for name in names for s in videos[name]), key=lambda s: s.sort_key)
        return plan_shards(chosen, 20_000)

    names = sorted(videos)
    full = members(plan(names))
    assert len(full) > 50
    for name in ("v42.mp4", "v43.mp4", "v299.mp4"):
        without = members(plan([n for n in names if n != name]))
        gone = {s.clip_id for s in videos[name]}
        changed_full = [ids for r, ids in full.items() if without.get(r) != ids]
        changed_without = [ids for r, ids in without.items() if full.get(r) != ids]
        # One range changed: the video's own shard, or the range it merged into with its sibling's clips.
        assert len(changed_without) <= 1 and any(ids & gone for ids in changed_full)
        assert set().union(*changed_full) - gone == set().union(*changed_without)
    for name in names:  # a video smaller than a shard is never split
        assert sum(1 for ids in full.values() if ids & {s.clip_id for s in videos[name]}) == 1

    big = [sample("huge.mp4", 99_000 + c, 5000) for c in range(10)]
    split = plan_shards(sorted(big, key=lambda s: s.sort_key), 12_000)
    assert sum(len(s.samples) for s in split) == 10 and all(sum(x.size for x in s.samples) <= 12_000 for s in split)


def test_the_assets_follow_the_index_and_a_removed_video_leaves_no_member_and_no_gallery_entry(inbox, output, instance):
    """Through Dagster: the clip index, near-duplicates, shards and gallery; then `b.mp4` removed as a curator
    removes a video (its outputs, its partition) and the assets re-materialized."""
    curate(instance, inbox, str(output), ["a.mp4", "b.mp4", "c.mp4"])
    dataset = open_dataset(str(output))
    rows = dataset.clips()
    twin_id, twin_of_id = (
        next(
            r[clip_index.CLIP_ID]
            for r in rows.to_pylist()
            if (r[clip_index.PARTITION_KEY], r[clip_index.SPAN_START]) == (v, 0.0)
        )
        for v in (TWIN[0], TWIN_OF[0])
    )
    dropped = max(twin_id, twin_of_id)  # the keep rule: equal durations, the smaller clip id stays
    result = materialize_exports(instance, inbox, str(output), shard_bytes=shard_bytes_for(rows, 2.5), page_size=3)
    assert result.success
    metadata = materialization_metadata(result, "training_shards")
    assert metadata["samples"] == 5 and metadata["duplicates_left_out"] == 1 and metadata["shards"] >= 2
    assert (
        all(e.passed for e in result.get_asset_check_evaluations()) and len(result.get_asset_check_evaluations()) == 2
    )
    check_samples(read_back(dataset.shards()), rows, passed_ids(rows) - {dropped})
    assert materialization_metadata(result, "clip_gallery")["clips"] == 6  # a near-duplicate is still a passed clip

    b_ids = {r[clip_index.CLIP_ID] for r in rows.to_pylist() if r[clip_index.PARTITION_KEY] == "b.mp4"}
    remove_partition(LocalStorage(output), "b.mp4", FAMILIES)
    instance.delete_dynamic_partition("processed_videos", "b.mp4")
    assert materialize_dataset_tables(instance, "a.mp4", str(inbox), str(output)).success  # drops b's rows
    again = materialize_exports(instance, inbox, str(output), shard_bytes=shard_bytes_for(rows, 2.5), page_size=3)
    assert again.success and all(e.passed for e in again.get_asset_check_evaluations())
    index = load_shards_index(LocalStorage(output))
    assert index is not None and not b_ids & {cid for e in index.shards for cid in e.clip_ids}
    remaining = dataset.clips()
    check_samples(read_back(dataset.shards()), remaining, passed_ids(remaining) - {dropped})
    tars = {p.relative_to(output).as_posix() for p in (output / layout.TRAINING_SHARDS).glob("*.tar")}
    assert tars == {e.key for e in index.shards}
    gallery = [p.read_text() for p in (output / layout.GALLERY).iterdir()]
    assert not [clip_id for clip_id in b_ids if any(clip_id in text for text in gallery)]
    assert not any("b.mp4" in text for text in gallery)
    assert materialization_metadata(again, "clip_gallery")["clips"] == 3


def test_on_s3_read_back_with_webdataset_through_a_pipe_url(s3, inbox, output, instance):
    """Shards written to the S3 endpoint read back as a training job reads them: `pipe:aws s3 cp URL -`.
    The same clips under a local root make the same bytes."""
    names = ["a.mp4", "b.mp4", "c.mp4"]
    write_videos(instance, inbox, s3.url("out"), names, s3=s3.connection)
    storage = s3.storage("out")
    rows = index_rows(storage, names)
    shard_bytes = shard_bytes_for(rows, 2.5)
    index = update_shards(storage, rows, shard_bytes=shard_bytes).index
    assert len(index.shards) >= 3
    for entry in index.shards:
        head = s3.client.head_object(Bucket=s3.bucket, Key=f"out/{entry.key}")
        assert head["ContentLength"] == entry.bytes and head["Metadata"]["sha256"] == entry.sha256
    assert verify_shards(storage, rows) == []
    s3.proxy.reset_counts()
    again = update_shards(storage, rows, shard_bytes=shard_bytes)
    assert again.index == index and len(again.kept) == len(index.shards)
    touched = [(r.operation, r.path.rsplit("/", 2)[-2:]) for r in s3.proxy.requests if r.operation.endswith("Object")]
    # The lease's lock object comes and goes; of the shards' own objects only the index file is read.
    assert [(op, name) for op, (folder, name) in touched if folder == "training_shards"] == [
        ("GetObject", "index.json")
    ]

    urls = [
        f"pipe:aws s3 cp --quiet --endpoint-url {s3.proxy.url} {layout.full_location(storage.root, e.key)} -"
        for e in index.shards
    ]
    check_samples(read_back(urls), rows, passed_ids(rows))

    write_videos(instance, inbox, str(output), names)
    local = update_shards(LocalStorage(output), index_rows(LocalStorage(output), names), shard_bytes=shard_bytes).index
    assert [(e.key, e.sha256) for e in local.shards] == [(e.key, e.sha256) for e in index.shards]


def test_no_clips_no_shards_and_an_index_that_says_so(dataset, output):
    rows = index_rows(dataset, ["a.mp4"])
    assert update_shards(dataset, rows, shard_bytes=1 << 20).index.samples == 2
    update = update_shards(dataset, clip_index.clip_index_schema().empty_table(), shard_bytes=1 << 20)
    assert update.index.shards == () and len(update.removed) == 1
    assert json.loads((output / layout.training_shards_index_key()).read_text())["shards"] == []
    assert list((output / layout.TRAINING_SHARDS).glob("*.tar")) == []


def test_a_changed_video_rewrites_only_its_own_shard(dataset, output, inbox, instance):
    before_rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    shard_bytes = shard_bytes_for(before_rows, 2.5)
    before = update_shards(dataset, before_rows, shard_bytes=shard_bytes).index
    clips = curated_clips("b.mp4")
    clips[0].windows[0].captions = {"qwen": "a red bus leaves the harbour, recaptioned"}
    write_video(inbox / "b.mp4.parquet", clips, source_video="/videos/b.mp4")
    assert materialize_partition(instance, "b.mp4", str(inbox), str(output)).success
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    update = update_shards(dataset, rows, shard_bytes=shard_bytes)

    changed = clips[0].uuid
    (rewritten,) = [e for e in update.index.shards if changed in e.clip_ids]
    assert update.written == [rewritten.key] and update.removed == [
        e.key for e in before.shards if changed in e.clip_ids
    ]
    assert sorted(update.kept) == sorted(e.key for e in before.shards if changed not in e.clip_ids)
    (sample,) = [s for s in read_back([str(output / rewritten.key)]) if s["__key__"] == changed]
    assert "recaptioned" in json.loads(sample["json"])[clip_index.CAPTION]


def test_at_a_hundred_thousand_clips_one_video_changes_one_range():
    """5,000 videos of 20 clips of 1-3 MB in 256 MiB shards (the default): adding a video replaces the one
    shard whose range it falls in, removing one replaces one; the other ~1,200 shards stay as they were."""
    rng = random.Random(1)

    def video(number: int) -> list[ShardSample]:
        name = f"video{number}.mp4"
        return [sample(name, number * 100 + c, rng.randint(1_000_000, 3_000_000)) for c in range(20)]

    videos = {number: video(number) for number in range(5001)}

    def plan(numbers):
        chosen = sorted((s for n in numbers for s in videos[n]), key=lambda s: s.sort_key)
        return members(plan_shards(chosen, DEFAULT_SHARD_BYTES))

    base = plan(range(5000))
    assert len(base) > 1000
    for other, changed_video in ((plan(range(5001)), 5000), (plan(n for n in range(5000) if n != 1234), 1234)):
        clips = {s.clip_id for s in videos[changed_video]}
        before = [ids for r, ids in base.items() if other.get(r) != ids]
        after = [ids for r, ids in other.items() if base.get(r) != ids]
        assert len(before) == 1 and len(after) <= 2  # one range replaced (split in two at most here)
        assert set().union(*before) | clips == set().union(*after) | clips  # the same clips, the video aside
        assert len(base) - len(before) == sum(1 for r, ids in other.items() if base.get(r) == ids)


def test_a_clip_without_an_embedding_is_a_sample_without_npy(dataset, output):
    rows = index_rows(dataset, ["a.mp4"])
    position = rows.column(clip_index.PASSED).to_pylist().index(True)
    clip_id = rows.column(clip_index.CLIP_ID)[position].as_py()
    column = rows.column(clip_index.EMBEDDING).combine_chunks()
    mask = pa.array([i == position or not column[i].is_valid for i in range(rows.num_rows)])
    emptied = pa.ListArray.from_arrays(column.offsets, column.values, mask=mask)
    rows = rows.set_column(rows.schema.get_field_index(clip_index.EMBEDDING), clip_index.EMBEDDING, emptied)
    index = update_shards(dataset, rows, shard_bytes=1 << 20).index
    samples = {s["__key__"]: s for s in read_back([str(output / e.key) for e in index.shards])}
    assert sorted(samples) == sorted(passed_ids(rows))
    assert "npy" not in samples[clip_id] and all("npy" in s for key, s in samples.items() if key != clip_id)
    assert decoded_frames(samples[clip_id]["mp4"]) == 8


def test_on_azure_and_gcs_the_shards_and_the_gallery_through_dagster_and_open_dataset(cloud, inbox, instance, tmp_path):
    """The exports on Azure and GCS as automation materializes them (with their checks), read back through
    `open_dataset` as a training job on that cloud would: every passed clip once."""
    names = ["a.mp4", "b.mp4", "c.mp4"]
    output = cloud.url("out")
    curate(instance, inbox, output, names)
    storage = cloud.storage("out")
    dataset = open_dataset(output, cloud.options)
    rows = dataset.clips()
    result = materialize_exports(instance, inbox, output, shard_bytes=shard_bytes_for(rows, 2.5), page_size=3)
    assert result.success and all(check.passed for check in result.get_asset_check_evaluations())
    metadata = materialization_metadata(result, "training_shards")
    assert metadata["samples"] == 5 and metadata["duplicates_left_out"] == 1

    urls = dataset.shards()
    assert len(urls) == metadata["shards"] >= 2
    local = []
    for number, url in enumerate(urls):
        assert url.startswith(f"{output}/{layout.TRAINING_SHARDS}")
        key = url.removeprefix(f"{output}/")
        data = storage.read(key)
        assert storage.stat(key).sha256 == hashlib.sha256(data).hexdigest()
        (tmp_path / f"{number}.tar").write_bytes(data)
        local.append(str(tmp_path / f"{number}.tar"))
    samples = read_back(local)
    assert len(samples) == 5
    check_samples(samples, rows, {sample["__key__"] for sample in samples})
    assert {sample["__key__"] for sample in samples} < passed_ids(rows)
    assert materialization_metadata(result, "clip_gallery")["clips"] == 6
    page = storage.read(layout.gallery_page_key()).decode()
    assert "<html" in page.lower()


def passed_clips(name: str) -> list:
    """The video's passed clips as the test wrote them (their ids derive from the video and span)."""
    return [clip for clip in curated_clips(name) if not clip.filtered]


def shard_members(output: Path) -> dict[str, str]:
    """clip id -> the shard that holds it, read from the tars themselves."""
    found = {}
    for path in sorted((output / layout.TRAINING_SHARDS).glob("*.tar")):
        with tarfile.open(path) as archive:
            for name in archive.getnames():
                found[name.split(".", 1)[0]] = path.relative_to(output).as_posix()
    return found


def test_a_clip_whose_mp4_is_absent_missing_or_damaged_is_left_out_listed_and_taken_back_once_right(
    dataset, output, inbox, instance
):
    """d.mp4's first clip was written without its MP4 (NeMo writes the metadata of a clip whose buffer is
    absent); a.mp4's first clip's file is deleted; b.mp4's first clip's file is other bytes of its size."""
    clips = curated_clips("d.mp4")
    clips[0].mp4 = None
    write_video(inbox / "d.mp4.parquet", clips, source_video="/videos/d.mp4")
    assert materialize_partition(instance, "d.mp4", str(inbox), str(output)).success
    absent = clips[0].uuid
    assert not (output / layout.clip_key(absent, filtered=False)).exists()
    missing, damaged = passed_clips("a.mp4")[0], passed_clips("b.mp4")[0]
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    missing_file = output / layout.clip_key(missing.uuid, filtered=False)
    missing_file.unlink()
    damaged_file = output / layout.clip_key(damaged.uuid, filtered=False)
    damaged_file.write_bytes(bytes(len(damaged.mp4)))  # the size the index records, other bytes
    shard_bytes = shard_bytes_for(rows, 2.5)

    update = update_shards(dataset, rows, shard_bytes=shard_bytes)
    reasons = {clip.clip_id: clip.reason for clip in update.index.left_out}
    assert reasons == {absent: "absent", missing.uuid: "missing", damaged.uuid: "damaged"}
    document = json.loads((output / layout.training_shards_index_key()).read_text())
    assert document["left_out_count"] == 3
    assert {(c["clip_id"], c["reason"]) for c in document["left_out"]} == set(reasons.items())
    every = {clip.uuid for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4") for clip in passed_clips(name)}
    assert set(shard_members(output)) == every - set(reasons) and len(every) == 8
    check_samples(read_back([str(output / e.key) for e in update.index.shards]), rows, every - set(reasons))
    assert verify_shards(dataset, rows) == []  # listed as left out: warned of by the check, not a problem
    with pytest.raises(ShardError, match=rf"clip {absent}: field 'mp4_key' is empty for a passed clip"):
        update_shards(dataset, rows, shard_bytes=shard_bytes, strict=True)
    with pytest.raises(ShardError, match=rf"clips/{missing.uuid}\.mp4: clip {missing.uuid}: missing"):
        update_shards(dataset, rows, {absent, damaged.uuid}, shard_bytes=shard_bytes, strict=True)

    missing_file.write_bytes(missing.mp4)  # the file is back: its shard is rebuilt with it, nothing else
    holder = next(e.key for e in update.index.shards if missing.uuid in {c.clip_id for c in e.left_out})
    again = update_shards(dataset, rows, shard_bytes=shard_bytes)
    assert {clip.clip_id for clip in again.index.left_out} == {absent, damaged.uuid}
    assert again.removed == [holder] and len(again.written) == 1
    assert shard_members(output)[missing.uuid] == again.written[0]
    assert sorted(again.kept) == sorted(e.key for e in update.index.shards if e.key != holder)


def test_re_embedding_a_video_rebuilds_its_shards_and_until_then_verify_names_them(dataset, output, inbox, instance):
    """b.mp4 again with the same MP4s and captions and new vectors: its shards' `.npy` must follow."""
    before_rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    shard_bytes = shard_bytes_for(before_rows, 2.5)
    before = update_shards(dataset, before_rows, shard_bytes=shard_bytes).index
    clips = curated_clips("b.mp4")
    fresh = {}
    for clip in clips:
        if not clip.filtered:
            fresh[clip.uuid] = np.random.default_rng(len(fresh) + 99).standard_normal(8).astype(np.float32)
            clip.embeddings = {"cosmos-embed1": fresh[clip.uuid]}
    write_video(inbox / "b.mp4.parquet", clips, source_video="/videos/b.mp4")
    assert materialize_partition(instance, "b.mp4", str(inbox), str(output)).success
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    holders = sorted({e.key for e in before.shards if set(e.clip_ids) & fresh.keys()})

    problems = verify_shards(dataset, rows)
    (stale,) = [p for p in problems if "out of date" in p]
    assert stale.startswith(f"{len(holders)} shards out of date") and any(key in stale for key in holders)
    update = update_shards(dataset, rows, shard_bytes=shard_bytes)
    assert sorted(update.removed) == holders and len(update.written) == len(holders)
    assert sorted(update.kept) == sorted(e.key for e in before.shards if e.key not in holders)
    samples = {s["__key__"]: s for s in read_back([str(output / key) for key in update.written])}
    for clip_id, vector in fresh.items():
        assert np.array_equal(np.load(io.BytesIO(samples[clip_id]["npy"])), vector)
    assert verify_shards(dataset, rows) == []


def test_verify_shards_names_a_row_missing_or_extra_a_changed_row_a_twice_member_and_damaged_or_missing_shards(
    dataset, output, inbox, instance
):
    rows = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4"])
    index = update_shards(dataset, rows, shard_bytes=shard_bytes_for(rows, 2.5)).index
    assert verify_shards(dataset, rows) == []
    gone = passed_clips("a.mp4")[0].uuid
    fewer = rows.filter(pa.compute.not_equal(rows.column(clip_index.CLIP_ID), gone))
    problems = verify_shards(dataset, fewer)
    assert f"1 shard members not passed non-duplicate clips of the index, e.g. {gone}" in problems
    write_videos(instance, inbox, str(output), ["d.mp4"])
    more = index_rows(dataset, ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    first_new = min(clip.uuid for clip in passed_clips("d.mp4"))
    assert f"2 passed, non-duplicate clips in no shard, e.g. {first_new}" in verify_shards(dataset, more)

    position = rows.column(clip_index.CLIP_ID).to_pylist().index(gone)
    captions = rows.column(clip_index.CAPTION).to_pylist()
    captions[position] = "recaptioned after the shards were built"
    changed = rows.set_column(rows.schema.get_field_index(clip_index.CAPTION), clip_index.CAPTION, [captions])
    holder = next(e.key for e in index.shards if gone in e.clip_ids)
    (stale,) = verify_shards(dataset, changed)
    assert stale.startswith("1 shards out of date") and holder in stale

    document = json.loads((output / layout.training_shards_index_key()).read_text())
    other = next(entry for entry in document["shards"] if gone not in entry["clip_ids"])
    other["clip_ids"].append(gone)
    (output / layout.training_shards_index_key()).write_text(json.dumps(document))
    assert f"1 clips in more than one shard, e.g. {gone}" in verify_shards(dataset, rows)
    other["clip_ids"].remove(gone)
    (output / layout.training_shards_index_key()).write_text(json.dumps(document))

    tar = output / holder
    tar.write_bytes(tar.read_bytes()[:-1024])  # truncated
    (damaged,) = verify_shards(dataset, rows)
    assert (
        damaged
        == f"{output}/{holder} is not the {tar.stat().st_size + 1024} bytes with sha256 "
        + next(e.sha256 for e in index.shards if e.key == holder)
        + " the index names"
    )
    tar.unlink()
    assert verify_shards(dataset, rows) == [f"{output}/{holder} is missing"]
