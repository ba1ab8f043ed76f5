import os

from dagster import build_sensor_context

from clip_assets.resources import StorageResource
from clip_assets.sensors import processed_video_sensor
from clip_assets_tests.factories import write_video


def tick(instance, inbox, cursor=None):
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"inbox": StorageResource(url=str(inbox))}
    ) as context:
        return processed_video_sensor(context)


def test_sensor_adds_partitions_and_requests_runs_incrementally(instance, inbox):
    write_video(inbox / "cam1/a.mp4.parquet", num_clips=1)
    write_video(inbox / "cam1/b...c.mp4.parquet", num_clips=1)
    (inbox / "cam1/partial.mp4.parquet").write_bytes(b"PAR1 not yet complete")

    first = tick(instance, inbox)
    assert sorted(r.partition_key for r in first.run_requests) == ["cam1/a.mp4", "cam1/b%2E%2E%2Ec.mp4"]
    (add_request,) = first.dynamic_partitions_requests
    assert sorted(add_request.partition_keys) == ["cam1/a.mp4", "cam1/b%2E%2E%2Ec.mp4"]
    instance.add_dynamic_partitions("processed_videos", list(add_request.partition_keys))

    second = tick(instance, inbox, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []

    path = write_video(inbox / "cam1/a.mp4.parquet", num_clips=2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = tick(instance, inbox, second.cursor)
    (request,) = third.run_requests
    assert request.partition_key == "cam1/a.mp4"
    assert request.run_key != first.run_requests[0].run_key  # a rewrite is a new run, not deduplicated
    assert third.dynamic_partitions_requests == []  # the partition exists already
