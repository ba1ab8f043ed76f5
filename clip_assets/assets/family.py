"""The shared shape of an output-family asset, so each family module only says what is its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster import AssetsDefinition, asset

from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.partitions import processed_video_partitions

OUTPUT_GROUP = "clip_outputs"
IO_MANAGER_KEY = "clip_artifact_io_manager"


def family_asset(name: str, kinds: set[str], description: str) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Partitioned per processed video, in group `clip_outputs`, written by the artifact IO manager."""
    return asset(
        name=name,
        partitions_def=processed_video_partitions,
        deps=[processed_videos],
        group_name=OUTPUT_GROUP,
        io_manager_key=IO_MANAGER_KEY,
        kinds=kinds,
        description=description,
    )
