"""Materialize one partition in a process of its own, so a test can kill it or run it as another user.

    python -m clip_assets_tests.support.partition_process INBOX OUTPUT DAGSTER_HOME PARTITION_KEY [MAX_WORKERS]

Prints each step failure's message and exits 1 when the run fails. S3 is reached through the standard
AWS variables and CLIP_ASSETS_S3_*, as in a deployment.
"""

from __future__ import annotations

import sys

from dagster import DagsterInstance, materialize

from clip_assets.defs.environment import configured
from clip_assets.defs.resources import WriterSettingsResource, s3_connection
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos


def main(inbox: str, output: str, home: str, partition_key: str, max_workers: str = "2") -> int:
    instance = DagsterInstance.from_config(home)
    if partition_key not in instance.get_dynamic_partitions(PARTITIONS_NAME):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])
    settings = WriterSettingsResource(input_path="/videos", max_workers=int(max_workers))
    result = materialize(
        [processed_videos, *FAMILY_ASSETS],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, settings, s3_connection(configured)),
        raise_on_error=False,
    )
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            print(event.event_specific_data.error.cause.message, flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
