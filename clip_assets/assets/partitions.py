"""One dynamic partition per processed-video file in the inbox."""

from dagster import DynamicPartitionsDefinition

PARTITIONS_NAME = "processed_videos"
processed_video_partitions = DynamicPartitionsDefinition(name=PARTITIONS_NAME)
# Dagster's own tags for one run over a key range (what `dagster asset materialize --partition-range`
# and batched backfills set); Dagster exports no public name for them.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
