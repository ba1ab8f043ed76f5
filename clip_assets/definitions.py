"""The only place that assembles Definitions: assets, job, sensor and resources.

Storage roots, `input_path`, the embedding algorithm and the S3 connection come from CLIP_ASSETS_*
variables through `EnvVar` (so the UI shows the variable, not its value); when a variable is unset its
embedded default is used (environment.py). S3 endpoint, region and credentials follow the standard AWS
variables and files, which never pass through Dagster's config at all.
"""

from __future__ import annotations

import os

from dagster import ConfigurableIOManager, ConfigurableResource, Definitions, EnvVar, in_process_executor

from clip_assets.assets.checks import output_checks
from clip_assets.assets.dataset_summary import dataset_summary
from clip_assets.assets.families import OUTPUT_FAMILIES
from clip_assets.assets.family import IO_MANAGER_KEY
from clip_assets.assets.inbox import processed_videos
from clip_assets.environment import DEFAULTS, EMBEDDING_ALGORITHM_VAR, INBOX_VAR, INPUT_PATH_VAR, OUTPUT_VAR
from clip_assets.io_manager import ClipArtifactIOManager
from clip_assets.jobs import curate_videos, summarize_dataset, verify_outputs
from clip_assets.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
    s3_connection,
)
from clip_assets.sensors import dataset_summary_automation, processed_video_sensor


def _from_environment(name: str) -> str | EnvVar:
    return EnvVar(name) if name in os.environ else DEFAULTS[name]


def build_resources(
    inbox: str | EnvVar,
    output: str | EnvVar,
    writer_settings: WriterSettingsResource,
    s3: S3ConnectionResource | None = None,
) -> dict[str, ConfigurableResource | ConfigurableIOManager]:
    """The resource set every deployment uses; tests call it with their own folders and endpoint."""
    output_storage = StorageResource(url=output, s3=s3)
    return {
        "inbox": StorageResource(url=inbox, s3=s3),
        "output": output_storage,
        "writer_settings": writer_settings,
        "validation_limits": ValidationLimitsResource(),
        IO_MANAGER_KEY: ClipArtifactIOManager(output=output_storage),
    }


defs = Definitions(
    assets=[
        processed_videos,
        *OUTPUT_FAMILIES,
        dataset_summary,
    ],
    asset_checks=output_checks,
    jobs=[curate_videos, summarize_dataset, verify_outputs],
    sensors=[processed_video_sensor, dataset_summary_automation],
    resources=build_resources(
        _from_environment(INBOX_VAR),
        _from_environment(OUTPUT_VAR),
        WriterSettingsResource(
            input_path=_from_environment(INPUT_PATH_VAR),
            embedding_algorithm=_from_environment(EMBEDDING_ALGORITHM_VAR),
        ),
        s3_connection(_from_environment),
    ),
    executor=in_process_executor,
)
