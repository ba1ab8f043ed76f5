"""One dynamic partition per processed-video file in the inbox."""

from dagster import DynamicPartitionsDefinition

PARTITIONS_NAME = "processed_videos"
processed_video_partitions = DynamicPartitionsDefinition(name=PARTITIONS_NAME)
