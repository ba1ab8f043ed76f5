"""One dynamic partition per processed-video file in a dataset's inbox."""

from dagster import DynamicPartitionsDefinition

# Dagster's own tags for one run over a key range (what `dagster asset materialize --partition-range`
# and batched backfills set); Dagster exports no public name for them.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def video_partitions(name: str) -> DynamicPartitionsDefinition:
    """The partitions of one dataset: one per processed video, registered by its sensor or `discover`."""
    return DynamicPartitionsDefinition(name=name)
