"""`CuratedDataset`: a curated dataset as a YAML file (`defs/<name>/defs.yaml`), not Python.

    type: clip_assets.components.CuratedDataset
    attributes:
      key_prefix: [cars]               # asset keys cars/clip_files, ...; jobs cars_curate_videos, ...
      inbox: s3://raw/cars/inbox
      output: s3://curated/cars
      input_path: /data/cars
      partitions_per_run: 50
      storage_options: {addressing_style: path}      # how to reach the stores (not credentials)
      writer_settings: {generate_captions: false}    # NeMo's writer knobs, for every run of this dataset
      near_duplicates: {eps: 0.02, which_to_keep: easy}   # a product's settings (its run config's defaults)

The file is the dataset's one source of truth: the UI, the sensors and `clip-assets --dataset cars`
all read it. With `from_environment: true` (the embedded default dataset) each setting is taken from
its CLIP_ASSETS_* variable when that is set, through `EnvVar`, so the UI shows the variable's name,
never its value; credentials always come from each store's standard chain.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from clip_assets.components.dataset import DEFAULT_OWNERS, dataset_definitions, dataset_resources
from clip_assets.components.environment import (
    DEFAULTS,
    EMBEDDING_ALGORITHM_VAR,
    EMBEDDING_VERSION_VAR,
    INBOX_VAR,
    INPUT_PATH_VAR,
    OUTPUT_VAR,
    PARALLEL_BACKEND_VAR,
    PARTITIONS_PER_RUN_VAR,
    SENSOR_INTERVAL_VAR,
)
from clip_assets.components.names import DatasetNames
from clip_assets.components.products import ProductSettingsError
from clip_assets.components.resources import ValidationLimitsResource, WriterSettingsResource, s3_connection

# Set at the top level of the YAML (and by CLIP_ASSETS_* variables), not inside `writer_settings`.
TOP_LEVEL_WRITER_SETTINGS = ("input_path", "embedding_algorithm", "embedding_version", "parallel_backend")


class DatasetConfigError(ValueError):
    """A dataset's YAML that cannot be right; the message names the file and the attribute."""


class CuratedDataset(dg.Component, dg.Resolvable, dg.Model):
    """Processed videos from one inbox curated into one output root: the output families as assets, checks,
    the derived dataset, the curate/verify/build jobs, the inbox sensor and the checks after each write."""

    key_prefix: list[str] = Field(default_factory=list, description="Goes in front of every asset key and name.")
    inbox: str = Field(default=DEFAULTS[INBOX_VAR], description="A folder or a store's URL (s3://bucket/prefix).")
    output: str = Field(default=DEFAULTS[OUTPUT_VAR], description="A folder or a store's URL (s3://bucket/prefix).")
    input_path: str = Field(default=DEFAULTS[INPUT_PATH_VAR], description="Prefix removed from video paths.")
    embedding_algorithm: str = Field(default=DEFAULTS[EMBEDDING_ALGORITHM_VAR])
    embedding_version: str = Field(
        default=DEFAULTS[EMBEDDING_VERSION_VAR], description="The embedding model's version, e.g. 224p."
    )
    parallel_backend: str = Field(
        default=DEFAULTS[PARALLEL_BACKEND_VAR],
        description="'threads' or 'ray': where a run's partitions are written (docs/deployment.md).",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="How to reach the inbox's and the output's stores, in their backends' option names "
        "(docs/architecture.md). Never credentials: those come from each store's standard chain.",
    )
    writer_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="NeMo's writer knobs and clip-assets' own, by the `writer_settings` resource's field names "
        "(generate_captions, caption_models, generate_previews, generate_embeddings, dry_run, ...): the "
        "defaults of every run of this dataset, the sensor's included; a run's config may still override them.",
    )
    validation_limits: dict[str, int] = Field(
        default_factory=dict, description="Size limits a processed video must respect (the resource's field names)."
    )
    partitions_per_run: int = Field(default=int(DEFAULTS[PARTITIONS_PER_RUN_VAR]), ge=1)
    sensor_interval_s: int = Field(default=int(DEFAULTS[SENSOR_INTERVAL_VAR]), ge=1)
    verify_after_write: bool = Field(
        default=True,
        description="Run the `intact` checks over the partitions of every successful curate run, in a run of "
        "their own (a re-read of what was written); off, they run only when launched.",
    )
    owners: list[str] = Field(default_factory=lambda: list(DEFAULT_OWNERS))
    near_duplicates: dict[str, Any] = Field(
        default_factory=dict,
        description="The near_duplicates product's settings, NeMo's names (eps, which_to_keep, n_clusters, rule, "
        "...): the defaults of its run config.",
    )
    training_shards: dict[str, Any] = Field(
        default_factory=dict, description="The training_shards product's settings (shard_bytes, batch_rows, strict)."
    )
    clip_gallery: dict[str, Any] = Field(
        default_factory=dict, description="The clip_gallery product's settings (page_size)."
    )
    from_environment: bool = Field(
        default=False, description="Take each setting from its CLIP_ASSETS_* variable when that is set."
    )
    _source: Path | None = PrivateAttr(default=None)

    @property
    def names(self) -> DatasetNames:
        return DatasetNames(tuple(self.key_prefix))

    @property
    def source(self) -> str:
        """Where this dataset is defined, for messages that tell a user what to change."""
        return str(self._source / "defs.yaml") if self._source is not None else self.names.label

    def _setting(self, variable: str, value: Any) -> Any:
        """The attribute, or the variable's `EnvVar` when `from_environment` and it is set."""
        return dg.EnvVar(variable) if self.from_environment and variable in os.environ else value

    def number(self, variable: str, value: int) -> int:
        """Numbers shape the definitions themselves (backfill policy, sensor interval): read at load."""
        return int(os.environ[variable]) if self.from_environment and variable in os.environ else value

    @property
    def resolved_partitions_per_run(self) -> int:
        """Partitions per run, as the definitions were built with."""
        return self.number(PARTITIONS_PER_RUN_VAR, self.partitions_per_run)

    def _writer_settings(self) -> WriterSettingsResource:
        misplaced = sorted(set(self.writer_settings) & set(TOP_LEVEL_WRITER_SETTINGS))
        if misplaced:
            raise DatasetConfigError(
                f"{self.source}: writer_settings.{misplaced[0]}: set {misplaced[0]} at the top level of attributes"
            )
        try:
            return WriterSettingsResource(
                **self.writer_settings,
                input_path=self._setting(INPUT_PATH_VAR, self.input_path),
                embedding_algorithm=self._setting(EMBEDDING_ALGORITHM_VAR, self.embedding_algorithm),
                embedding_version=self._setting(EMBEDDING_VERSION_VAR, self.embedding_version),
                parallel_backend=self._setting(PARALLEL_BACKEND_VAR, self.parallel_backend),
            )
        except (TypeError, ValueError) as exc:
            raise DatasetConfigError(f"{self.source}: writer_settings: {_first_line(exc)}") from None

    def _validation_limits(self) -> ValidationLimitsResource:
        try:
            return ValidationLimitsResource(**self.validation_limits)
        except (TypeError, ValueError) as exc:
            raise DatasetConfigError(f"{self.source}: validation_limits: {_first_line(exc)}") from None

    def build_defs(self, context: dg.ComponentLoadContext | None) -> dg.Definitions:
        if context is not None:
            self._source = context.path
        setting = self._setting
        s3 = s3_connection(lambda variable: setting(variable, DEFAULTS[variable]))
        resources = dataset_resources(
            self.names,
            setting(INBOX_VAR, self.inbox),
            setting(OUTPUT_VAR, self.output),
            self._writer_settings(),
            s3,
            self._validation_limits(),
            storage_options=self.storage_options,
        )
        try:
            return self._definitions(resources)
        except ProductSettingsError as exc:
            raise DatasetConfigError(f"{self.source}: {exc}") from None

    def _definitions(self, resources: Mapping[str, Any]) -> dg.Definitions:
        return dataset_definitions(
            self.names,
            resources,
            partitions_per_run=self.resolved_partitions_per_run,
            sensor_interval_s=self.number(SENSOR_INTERVAL_VAR, self.sensor_interval_s),
            owners=self.owners,
            verify_after_write=self.verify_after_write,
            settings={
                "near_duplicates": self.near_duplicates,
                "training_shards": self.training_shards,
                "clip_gallery": self.clip_gallery,
            },
        )


def _first_line(exc: Exception) -> str:
    """Pydantic's message on one line: the field and what is wrong with it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[1]}: {lines[2].split(' [type=')[0]}"
    return lines[0] if lines else type(exc).__name__
