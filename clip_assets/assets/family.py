"""The shared shape of an output-family asset, so each family module only says what is its own.

A family is a pure builder `(validated video, report) -> artifacts`; this wraps it into a partitioned
asset that validates its partition's file first and hands the artifacts to the artifact IO manager.
"""

from collections.abc import Callable, Iterable
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, asset

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.opening import ValidatedVideo, open_validated_video
from clip_assets.assets.partitions import processed_video_partitions
from clip_assets.io_manager import FamilyOutput
from clip_assets.resources import StorageResource, WriterSettingsResource

OUTPUT_GROUP = "clip_outputs"
IO_MANAGER_KEY = "clip_artifact_io_manager"

FamilyBuilder = Callable[[ValidatedVideo, BuildReport], Iterable[Artifact]]


def family_asset(
    name: str,
    kinds: set[str],
    description: str,
    describe: Callable[[BuildReport], dict[str, Any]] | None = None,
) -> Callable[[FamilyBuilder], AssetsDefinition]:
    """Partitioned per processed video, in group `clip_outputs`, written by the artifact IO manager.

    `describe` adds materialization metadata from the report once the artifacts are written.
    """

    def decorator(build: FamilyBuilder) -> AssetsDefinition:
        @asset(
            name=name,
            partitions_def=processed_video_partitions,
            deps=[processed_videos],
            group_name=OUTPUT_GROUP,
            io_manager_key=IO_MANAGER_KEY,
            kinds=kinds,
            description=description,
        )
        def family(
            context: AssetExecutionContext,
            inbox: StorageResource,
            output: StorageResource,
            writer_settings: WriterSettingsResource,
        ) -> FamilyOutput:
            video = open_validated_video(context, inbox, output, writer_settings)
            report = BuildReport()
            return FamilyOutput(
                video.name,
                build(video, report),
                report,
                video.settings.max_workers,
                (lambda: describe(report)) if describe else dict,
            )

        return family

    return decorator
