"""The foundation scenario on an object store: real runs against a real endpoint process behind a fault
proxy (S3 on moto and LocalStack; the end-to-end run on Azurite and fake-gcs-server too).

Discover, materialize every family, compare with the same run on local disk, re-run (no upload at
all), change the input (no stale object), survive a burst of 5xx, and never leak the credentials.
"""

import io
import json
from collections import Counter
from urllib.parse import unquote

import av
import pytest
from PIL import Image

from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.contract.partition_keys import decode_partition_key
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import materialize_partition
from clip_assets_tests.support.dataset import sensor_tick as tick_sensor
from clip_assets_tests.support.factories import make_clips, noise_mp4, write_video
from clip_assets_tests.support.s3_endpoint import SECRET_KEY, s3_connection_via


def publish(store, inbox_prefix, local_path, relative):
    """Upload a processed video the way a producer does: one PUT of the complete file."""
    store.storage(inbox_prefix).put(relative, local_path.read_bytes())


def sensor_tick(instance, store, inbox_url, cursor=None):
    result = tick_sensor(instance, inbox_url, store.s3, cursor)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions("processed_videos", list(request.partition_keys))
    return result


def s3_tree(s3, prefix):
    """Every object under the output prefix (bookkeeping aside), downloaded."""
    storage = s3.storage(prefix)
    return {info.key: storage.read(info.key) for info in storage.list() if not info.key.startswith("_clip_assets/")}


def local_tree(root):
    storage = LocalStorage(root)
    return {info.key: storage.read(info.key) for info in storage.list() if not info.key.startswith("_clip_assets/")}


def same_modulo_root(s3_files, local_files, s3_root, local_root):
    """Files identical byte for byte, except that metadata JSON names its own output root."""
    assert sorted(s3_files) == sorted(local_files)
    for key, data in s3_files.items():
        if key.startswith("metas/"):
            s3_doc, local_doc = json.loads(data), json.loads(local_files[key])
            location, local_location = s3_doc["clip_location"], local_doc["clip_location"]
            assert local_location.startswith(local_root + "/"), (key, local_location)
            assert location == s3_root + local_location.removeprefix(local_root), (key, location)
            assert location.removeprefix(s3_root + "/") in s3_files, (key, location)  # it names a stored clip
            assert location.endswith(f"/{key.rsplit('/', 1)[1].removesuffix('.json')}.mp4"), (key, location)
            s3_doc["clip_location"] = local_doc["clip_location"] = key
            assert s3_doc == local_doc
        else:
            assert data == local_files[key], key


def failures(result):
    events = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return [e.event_specific_data.error.cause.message for e in events]


def test_store_inbox_and_output_end_to_end(store, instance, tmp_path):
    """On S3, Azure and GCS alike (`store`), reached through the standard variables alone."""
    first = make_clips(3, filtered=[1])
    second = make_clips(2, source_video="/videos/cam2/b.mp4")
    write_video(tmp_path / "a.parquet", first)
    write_video(tmp_path / "b.parquet", second, source_video="/videos/cam2/b.mp4")
    publish(store, "inbox", tmp_path / "a.parquet", "cam1/street walk.mp4.parquet")
    publish(store, "inbox", tmp_path / "b.parquet", "cam2/b.mp4.parquet")
    store.storage("inbox").put("cam2/partial.mp4.parquet", (tmp_path / "b.parquet").read_bytes()[:500])
    inbox, output = store.url("inbox"), store.url("curated")

    tick = sensor_tick(instance, store, inbox)
    keys = instance.get_dynamic_partitions("processed_videos")
    assert keys == ["cam1/street walk.mp4", "cam2/b.mp4"]  # the truncated upload is skipped
    (request,) = tick.run_requests
    assert request.tags == {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[1]}
    store.proxy.reset_counts()
    assert materialize_partition(instance, keys[0], inbox, output, s3=store.s3).success
    requests_per_partition = Counter(r.operation for r in store.proxy.requests)
    assert materialize_partition(instance, keys[1], inbox, output, s3=store.s3).success
    print(f"\n{store.name}: requests for partition {keys[0]!r}: {dict(sorted(requests_per_partition.items()))}")
    # Each family's manifest is read before the lock and under it, then known: settling reads none again
    # (clip_metadata's is read once more, for the clip ids the partition already holds).
    manifest_reads = Counter(
        unquote(r.path).split("/_clip_assets/manifests/")[1].split("/")[0]
        for r in store.requests(store.operations.reads)
        if "/_clip_assets/manifests/" in unquote(r.path)
    )
    assert manifest_reads == {
        family.name: len(keys) * (3 if family.name == "clip_metadata" else 2) for family in OUTPUT_FAMILIES
    }

    # The same inputs on local disk give the same tree, file for file.
    local_inbox, local_output = tmp_path / "local-inbox", tmp_path / "local-output"
    for key in keys:
        (local_inbox / decode_partition_key(key)).parent.mkdir(parents=True, exist_ok=True)
        (local_inbox / decode_partition_key(key)).write_bytes(store.storage("inbox").read(decode_partition_key(key)))
        assert materialize_partition(instance, key, str(local_inbox), str(local_output)).success
    files = s3_tree(store, "curated")
    same_modulo_root(files, local_tree(local_output), store.url("curated"), str(local_output.resolve()))
    with av.open(io.BytesIO(files[f"clips/{first[0].uuid}.mp4"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    with Image.open(io.BytesIO(files[f"previews/{first[0].uuid}/0_4.webp"])) as image:
        assert image.format == "WEBP" and image.n_frames == 2
    assert json.loads(files["processed_videos/cam1/street walk.mp4.json"])["num_total_clips"] == 3

    # A re-run of unchanged partitions uploads nothing at all, manifests included.
    store.proxy.reset_counts()
    for key in keys:
        assert materialize_partition(instance, key, inbox, output, s3=store.s3).success
    assert store.count(store.operations.writes) == 0, dict(store.proxy.counts)
    assert store.count(store.operations.deletes) == 0
    read_inbox = [r for r in store.requests(store.operations.reads) if "/inbox/" in unquote(r.path)]
    assert read_inbox == []  # unchanged input: outputs verified by HEAD, the videos not read at all
    assert s3_tree(store, "curated") == files

    # A changed input is found by the next tick and leaves no stale object.
    write_video(tmp_path / "a2.parquet", [first[0], first[2]])
    publish(store, "inbox", tmp_path / "a2.parquet", "cam1/street walk.mp4.parquet")
    changed = sensor_tick(instance, store, inbox, tick.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["cam1/street walk.mp4"]
    assert materialize_partition(instance, "cam1/street walk.mp4", inbox, output, s3=store.s3).success
    gone = first[1].uuid
    remaining = store.keys("curated")
    assert remaining and not [k for k in remaining if gone in k]
    for key, data in s3_tree(store, "curated").items():
        if key.endswith(".json"):
            assert gone not in data.decode()
    assert sensor_tick(instance, store, inbox, changed.cursor).run_requests == []


@pytest.mark.timeout(900)  # the first LocalStack test may build its virtualenv (support/localstack.py)
def test_local_inbox_s3_output_with_a_multipart_clip(s3_implementation, instance, inbox):
    s3 = s3_implementation  # moto, then LocalStack
    clips = make_clips(2)
    clips[0].mp4 = noise_mp4(6 * 1024 * 1024)  # above the 6 MiB multipart threshold
    write_video(inbox / "cam1/street walk.mp4.parquet", clips)
    output = s3.url("out")
    assert materialize_partition(instance, "cam1/street walk.mp4", str(inbox), output, s3=s3.connection).success
    assert s3.proxy.counts["CompleteMultipartUpload"] == 1 and s3.proxy.counts["UploadPart"] >= 2
    stored = s3.storage("out")
    assert stored.read(f"clips/{clips[0].uuid}.mp4") == clips[0].mp4
    assert stored.read(f"clips/{clips[1].uuid}.mp4") == clips[1].mp4
    meta = json.loads(stored.read(f"metas/v0/{clips[0].uuid}.json"))
    assert meta["clip_location"] == f"s3://{s3.bucket}/out/clips/{clips[0].uuid}.mp4"
    assert meta["num_bytes"] == len(clips[0].mp4)


@pytest.mark.timeout(900)  # the first LocalStack test may build its virtualenv (support/localstack.py)
def test_a_burst_of_5xx_and_resets_during_a_run_gives_identical_output(
    s3_implementation, instance, tmp_path, inbox, reliability
):
    s3 = s3_implementation  # moto, then LocalStack
    write_video(inbox / "v.mp4.parquet", make_clips(4, filtered=[2]), source_video="/videos/v.mp4")
    clean = s3.url("clean")
    assert materialize_partition(instance, "v.mp4", str(inbox), clean, s3=s3.connection).success

    # Within the bound of 5 attempts per request: the first uploads meet 3 throttles and a reset in a row.
    s3.proxy.inject("PutObject", count=3, status=503, code="SlowDown")
    s3.proxy.inject("HeadObject", "GetObject", count=3, status=500, code="InternalError")
    s3.proxy.inject("PutObject", count=1, reset=True)
    faulty = s3.url("faulty")
    assert materialize_partition(instance, "v.mp4", str(inbox), faulty, s3=s3.connection).success
    assert sum(s3.proxy.injected.values()) == 7
    clean_files, faulty_files = s3_tree(s3, "clean"), s3_tree(s3, "faulty")
    same_modulo_root(faulty_files, clean_files, f"s3://{s3.bucket}/faulty", f"s3://{s3.bucket}/clean")
    reliability.record(
        "fault",
        "S3 503 SlowDown, 500 and connection resets during a run",
        tried=7,
        handled=7,
        nothing_lost="every object byte-identical to a clean run's",
    )


def test_an_endpoint_down_for_too_long_fails_clearly_and_keeps_previous_outputs(s3, instance, inbox, reliability):
    write_video(inbox / "v.mp4.parquet", make_clips(2), source_video="/videos/v.mp4")
    output = s3.url("out")
    assert materialize_partition(instance, "v.mp4", str(inbox), output, s3=s3.connection).success
    before = s3_tree(s3, "out")
    write_video(inbox / "v.mp4.parquet", make_clips(3), source_video="/videos/v.mp4")
    s3.proxy.go_down(seconds=60)
    impatient = s3_connection_via(s3.proxy, max_attempts=3)  # each family gives up within seconds
    result = materialize_partition(instance, "v.mp4", str(inbox), output, s3=impatient)
    s3.proxy.go_down(seconds=0)
    assert not result.success
    messages = failures(result)
    assert messages and all(f"s3://{s3.bucket}/out" in m for m in messages), messages
    assert s3_tree(s3, "out") == before
    reliability.record(
        "fault",
        "S3 endpoint gone for a minute (retries exhausted)",
        tried=1,
        handled=1,
        nothing_lost="every family failed naming the s3:// object; previous outputs unchanged",
    )


# Three attempts back off for a few seconds; a 503 read as "someone else holds the lease" instead would
# wait on it for an hour, which this timeout turns into a failure.
@pytest.mark.timeout(120)
def test_writes_answered_5xx_beyond_the_retries_fail_the_run_fast_naming_the_object(s3, instance, inbox):
    write_video(inbox / "v.mp4.parquet", make_clips(2), source_video="/videos/v.mp4")
    s3.proxy.inject("PutObject", count=10_000, status=503, code="SlowDown")
    impatient = s3_connection_via(s3.proxy, max_attempts=3)
    result = materialize_partition(instance, "v.mp4", str(inbox), s3.url("out"), s3=impatient)
    assert not result.success
    messages = failures(result)
    assert messages and all(f"s3://{s3.bucket}/out/" in m and "SlowDown" in m for m in messages), messages
    assert s3.keys("out") == []  # nothing half-written, not even a lease


@pytest.mark.timeout(900)  # the first LocalStack test may build its virtualenv (support/localstack.py)
def test_credentials_never_reach_logs_metadata_or_errors(s3_implementation, instance, inbox, capfd):
    s3 = s3_implementation  # moto, then LocalStack
    write_video(inbox / "v.mp4.parquet", make_clips(2), source_video="/videos/v.mp4")
    good = materialize_partition(instance, "v.mp4", str(inbox), s3.url("out"), s3=s3.connection)
    assert good.success
    bad = materialize_partition(instance, "v.mp4", str(inbox), f"s3://missing-{s3.bucket}/out", s3=s3.connection)
    assert not bad.success and any("NoSuchBucket" in m for m in failures(bad))
    for run in (good, bad):
        records = instance.all_logs(run.run_id)
        assert records
        for record in records:
            assert SECRET_KEY not in str(record)
        run_record = instance.get_run_by_id(run.run_id)
        assert SECRET_KEY not in json.dumps(run_record.run_config, default=str)
    captured = capfd.readouterr()
    assert SECRET_KEY not in captured.out + captured.err
