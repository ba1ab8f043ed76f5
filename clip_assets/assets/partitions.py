"""One dynamic partition per processed-video file in the inbox."""

from dagster import DynamicPartitionsDefinition

processed_video_partitions = DynamicPartitionsDefinition(name="processed_videos")
