"""`CuratedDataset`: a curated dataset as a YAML file (`defs/<name>/defs.yaml`), not Python.

    type: clip_assets.components.CuratedDataset
    attributes:
      key_prefix: [cars]               # asset keys cars/clip_files, ...; jobs cars_curate_videos, ...
      inbox: s3://raw/cars/inbox
      output: s3://curated/cars
      input_path: /data/cars
      partitions_per_run: 50

With `from_environment: true` (the embedded default dataset) each setting is taken from its
CLIP_ASSETS_* variable when that is set, through `EnvVar`, so the UI shows the variable's name, never
its value; S3 endpoint, region and credentials always come from the standard AWS chain.
"""

import os
from typing import Any

import dagster as dg
from pydantic import Field

from clip_assets.components.dataset import DEFAULT_OWNERS, dataset_definitions, dataset_resources
from clip_assets.components.environment import (
    DEFAULTS,
    EMBEDDING_ALGORITHM_VAR,
    EMBEDDING_VERSION_VAR,
    INBOX_VAR,
    INPUT_PATH_VAR,
    OUTPUT_VAR,
    PARTITIONS_PER_RUN_VAR,
    SENSOR_INTERVAL_VAR,
)
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import WriterSettingsResource, s3_connection


class CuratedDataset(dg.Component, dg.Resolvable, dg.Model):
    """Processed videos from one inbox curated into one output root: the output families as assets, checks,
    the dataset summary, the curate/verify/summarize jobs and the inbox sensor."""

    key_prefix: list[str] = Field(default_factory=list, description="Goes in front of every asset key and name.")
    inbox: str = Field(default=DEFAULTS[INBOX_VAR], description="A folder or s3://bucket/prefix.")
    output: str = Field(default=DEFAULTS[OUTPUT_VAR], description="A folder or s3://bucket/prefix.")
    input_path: str = Field(default=DEFAULTS[INPUT_PATH_VAR], description="Prefix removed from video paths.")
    embedding_algorithm: str = Field(default=DEFAULTS[EMBEDDING_ALGORITHM_VAR])
    embedding_version: str = Field(
        default=DEFAULTS[EMBEDDING_VERSION_VAR], description="The embedding model's version, e.g. 224p."
    )
    partitions_per_run: int = Field(default=int(DEFAULTS[PARTITIONS_PER_RUN_VAR]), ge=1)
    sensor_interval_s: int = Field(default=int(DEFAULTS[SENSOR_INTERVAL_VAR]), ge=1)
    owners: list[str] = Field(default_factory=lambda: list(DEFAULT_OWNERS))
    from_environment: bool = Field(
        default=False, description="Take each setting from its CLIP_ASSETS_* variable when that is set."
    )

    def _setting(self, variable: str, value: Any) -> Any:
        """The attribute, or the variable's `EnvVar` when `from_environment` and it is set."""
        return dg.EnvVar(variable) if self.from_environment and variable in os.environ else value

    def _number(self, variable: str, value: int) -> int:
        """Numbers shape the definitions themselves (backfill policy, sensor interval): read at load."""
        return int(os.environ[variable]) if self.from_environment and variable in os.environ else value

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        names = DatasetNames(tuple(self.key_prefix))
        setting = self._setting
        writer_settings = WriterSettingsResource(
            input_path=setting(INPUT_PATH_VAR, self.input_path),
            embedding_algorithm=setting(EMBEDDING_ALGORITHM_VAR, self.embedding_algorithm),
            embedding_version=setting(EMBEDDING_VERSION_VAR, self.embedding_version),
        )
        s3 = s3_connection(lambda variable: setting(variable, DEFAULTS[variable]))
        resources = dataset_resources(
            names, setting(INBOX_VAR, self.inbox), setting(OUTPUT_VAR, self.output), writer_settings, s3
        )
        return dataset_definitions(
            names,
            resources,
            partitions_per_run=self._number(PARTITIONS_PER_RUN_VAR, self.partitions_per_run),
            sensor_interval_s=self._number(SENSOR_INTERVAL_VAR, self.sensor_interval_s),
            owners=self.owners,
        )
