import os

from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.engine.discovery import DiscoveredVideo, batch_runs
from clip_assets_tests.support.dataset import sensor_tick
from clip_assets_tests.support.factories import write_video


def tick(instance, inbox, cursor=None):
    return sensor_tick(instance, str(inbox), cursor=cursor)


def test_sensor_adds_partitions_and_requests_runs_incrementally(instance, inbox):
    write_video(inbox / "cam1/a.mp4.parquet", num_clips=1)
    write_video(inbox / "cam1/b...c.mp4.parquet", num_clips=1)
    (inbox / "cam1/partial.mp4.parquet").write_bytes(b"PAR1 not yet complete")

    first = tick(instance, inbox)
    (batch,) = first.run_requests  # new partitions are consecutive: one run covers them
    assert batch.partition_key is None
    assert (batch.tags[RANGE_START_TAG], batch.tags[RANGE_END_TAG]) == ("cam1/a.mp4", "cam1/b%2E%2E%2Ec.mp4")
    (add_request,) = first.dynamic_partitions_requests
    assert list(add_request.partition_keys) == ["cam1/a.mp4", "cam1/b%2E%2E%2Ec.mp4"]
    instance.add_dynamic_partitions("processed_videos", list(add_request.partition_keys))

    second = tick(instance, inbox, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []

    path = write_video(inbox / "cam1/a.mp4.parquet", num_clips=2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = tick(instance, inbox, second.cursor)
    (request,) = third.run_requests
    assert request.partition_key == "cam1/a.mp4" and request.run_key.startswith("cam1/a.mp4@")
    assert request.run_key != batch.run_key  # a rewrite is a new run, not deduplicated
    assert third.dynamic_partitions_requests == []  # the partition exists already


def test_a_file_already_written_is_registered_but_not_run_again(instance, inbox, run_partition):
    """After `clip-assets discover` and `backfill` (or a daemon's restart, its cursor lost), the sensor's
    first tick finds every file new; those already written from the very same file run nothing."""
    write_video(inbox / "a.mp4.parquet", num_clips=1)
    write_video(inbox / "b.mp4.parquet", num_clips=1)
    assert run_partition("a.mp4").success
    first = tick(instance, inbox)
    (request,) = first.run_requests
    assert request.partition_key == "b.mp4"  # a.mp4's outputs are from this very file
    assert sorted(event.partition for event in first.asset_events) == ["a.mp4", "b.mp4"]

    path = write_video(inbox / "a.mp4.parquet", num_clips=2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (rewritten,) = tick(instance, inbox, first.cursor).run_requests
    assert rewritten.partition_key == "a.mp4"  # changed since it was written: runs again


def video(key, fingerprint="1:1"):
    return DiscoveredVideo(key, f"{key}.parquet", fingerprint)


def test_new_videos_are_batched_into_runs_of_consecutive_partitions():
    known = [f"old{i}" for i in range(5)]
    new = [f"new{i:02d}" for i in range(60)]
    batches = batch_runs([video(k) for k in [*new, "old1", "old3", "old4"]], [*known, *new], max_per_run=25)
    assert [(b.first, b.last, len(b.videos)) for b in batches] == [
        ("old1", "old1", 1),
        ("old3", "new22", 25),  # old3, old4 and the first new ones are neighbours in the partition order
        ("new23", "new47", 25),
        ("new48", "new59", 12),
    ]
    again = batch_runs([video(k) for k in [*new, "old1", "old3", "old4"]], [*known, *new], max_per_run=25)
    assert [b.run_key for b in again] == [b.run_key for b in batches]  # a repeat is deduplicated
    rewritten = batch_runs([video("new30", "2:2")], [*known, *new], max_per_run=25)
    assert rewritten[0].run_key == "new30@2:2"
