"""The shared shape of an output-family asset, so each family module only says what is its own.

A family is a pure builder `(validated video, report) -> artifacts`; this wraps it into a partitioned
asset that validates its partition's file first and hands the artifacts to the artifact IO manager.
"""

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, BetaWarning, asset

from clip_assets import layout
from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.opening import InboxFile, ValidatedVideo, find_inbox_file, open_validated_video
from clip_assets.assets.partitions import processed_video_partitions
from clip_assets.batch_writer import PartitionWork
from clip_assets.contract.limits import ValidationLimits
from clip_assets.environment import PARTITIONS_PER_RUN_VAR, configured
from clip_assets.io_manager import FamilyBatch
from clip_assets.output_version import output_version
from clip_assets.resources import StorageResource, ValidationLimitsResource, WriterSettingsResource
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage

OUTPUT_GROUP = "clip_outputs"
IO_MANAGER_KEY = "clip_artifact_io_manager"
# A backfill of N partitions runs as ceil(N / this) runs, not N: each run handles its partitions in turn.
PARTITIONS_PER_RUN = int(configured(PARTITIONS_PER_RUN_VAR))
# Every family step takes a slot of this concurrency pool while it writes, so a deployment can bound
# simultaneous writers to its output storage (`dagster instance concurrency set clip_assets_writes N`).
WRITE_POOL = "clip_assets_writes"

FamilyBuilder = Callable[[ValidatedVideo, BuildReport], Iterable[Artifact]]
Describer = Callable[[BuildReport], dict[str, Any]]
# Every family's builder and describer by asset name, so code outside Dagster (benchmarks) writes a
# partition exactly as the assets do. Filled as the family modules load (import clip_assets.assets.families).
FAMILIES: dict[str, tuple[FamilyBuilder, Describer | None]] = {}


def partition_work(
    family: str,
    partition_key: str,
    file: InboxFile,
    output: Storage,
    settings: WriterSettings,
    limits: ValidationLimits,
    log: logging.Logger,
) -> PartitionWork:
    """One partition's work for one family: inspection and building deferred until the writer needs them."""
    build, describe = FAMILIES[family]
    version = output_version(file.info.fingerprint, settings)

    def artifacts(report: BuildReport) -> Iterable[Artifact]:
        return build(open_validated_video(file, partition_key, output, settings, limits, log), report)

    return PartitionWork(partition_key, file.name, version, artifacts, describe)


def family_asset(
    name: str,
    kinds: set[str],
    description: str,
    describe: Describer | None = None,
) -> Callable[[FamilyBuilder], AssetsDefinition]:
    """Partitioned per processed video, in group `clip_outputs`, written by the artifact IO manager.

    `describe` adds materialization metadata from the report once the artifacts are written.
    """

    def decorator(build: FamilyBuilder) -> AssetsDefinition:
        FAMILIES[name] = (build, describe)

        def family(
            context: AssetExecutionContext,
            inbox: StorageResource,
            output: StorageResource,
            writer_settings: WriterSettingsResource,
            validation_limits: ValidationLimitsResource,
        ) -> FamilyBatch:
            """Only finds each partition's file here; inspection and writing happen partition by partition."""
            inbox_storage, output_storage = inbox.get_storage(), output.get_storage()
            settings = writer_settings.to_settings(output_storage.root)
            layout.embedding_prefix(settings.embedding_algorithm)  # a configuration error, not a file's
            limits = validation_limits.to_limits()

            work: list[PartitionWork] = []
            failures: dict[str, Exception] = {}
            for key in sorted(context.partition_keys):
                try:
                    file = find_inbox_file(inbox_storage, key)
                except Exception as error:  # one partition's failure must not cost the others theirs
                    failures[key] = error
                    continue
                work.append(partition_work(name, key, file, output_storage, settings, limits, context.log))
            return FamilyBatch(
                work,
                failures,
                settings.max_workers,
                lambda key, metadata: context.add_asset_metadata(metadata, partition_key=key),
            )

        # `backfill_policy` is beta in Dagster 1.13 and would warn on every load of the code location, in
        # every command; what this project relies on is pinned by its tests (test_batches.py).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=BetaWarning)
            return asset(
                name=name,
                partitions_def=processed_video_partitions,
                backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN),
                pool=WRITE_POOL,
                deps=[processed_videos],
                group_name=OUTPUT_GROUP,
                io_manager_key=IO_MANAGER_KEY,
                kinds=kinds,
                description=description,
            )(family)

    return decorator
