"""Fixtures: an inbox and an output folder on disk, a temporary Dagster instance, and a runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test, materialize

from clip_assets.assets.clip_embeddings import clip_embeddings
from clip_assets.assets.clip_files import clip_files
from clip_assets.assets.clip_metadata import clip_metadata
from clip_assets.assets.clip_previews import clip_previews
from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.partitions import processed_video_partitions
from clip_assets.assets.video_summaries import video_summaries
from clip_assets.definitions import build_resources
from clip_assets.resources import WriterSettingsResource

FAMILY_ASSETS = [clip_files, clip_previews, clip_embeddings, clip_metadata, video_summaries]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "output"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


Runner = Callable[..., ExecuteInProcessResult]


@pytest.fixture
def run_partition(inbox: Path, output: Path, instance: DagsterInstance) -> Runner:
    """Materialize every output family of one partition, as `curate_videos` does."""

    def run(partition_key: str, assets: list | None = None, **settings: object) -> ExecuteInProcessResult:
        known = instance.get_dynamic_partitions(processed_video_partitions.name)
        if partition_key not in known:
            instance.add_dynamic_partitions(processed_video_partitions.name, [partition_key])
        writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
        return materialize(
            [processed_videos, *(assets or FAMILY_ASSETS)],
            partition_key=partition_key,
            instance=instance,
            resources=build_resources(str(inbox), str(output), writer_settings),
            raise_on_error=False,
        )

    return run
