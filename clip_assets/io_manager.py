"""The IO manager that owns writing: every family asset hands it a batch of partitions, it writes each.

A run may carry one partition or many (a batched backfill). Each partition is written on its own,
under its own lock, with its own manifest and metadata, and a partition that fails (a bad input, a
storage error) fails alone: the others are written and recorded as materialized, and the step then
fails naming every failed partition and why.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetMaterialization,
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    ResourceDependency,
)
from pydantic import Field

from clip_assets.artifact_writer import ArtifactWriter, WriteResult
from clip_assets.artifacts import BuildReport
from clip_assets.batch_writer import PARTITIONS_IN_PARALLEL, PartitionWork, write_partitions
from clip_assets.manifest import PartitionManifest
from clip_assets.resources import StorageResource

# Every artifact is in the manifest; the event log gets a sample (each row costs ~170 bytes in every event).
_MAX_LISTED_ARTIFACTS = 20


@dataclass
class FamilyBatch:
    """What a family asset returns: the work per partition, and the partitions that failed already."""

    work: list[PartitionWork]
    failures: dict[str, Exception]
    max_workers: int
    # Attaches metadata to one partition's materialization (the asset context's public API).
    record_partition_metadata: Callable[[str, dict[str, Any]], None]


class PartitionsFailed(Exception):
    """Some partitions of a batch failed; the others were written and are recorded as materialized."""

    def __init__(self, asset: str, failures: dict[str, Exception], succeeded: int) -> None:
        self.failures = failures
        lines = [f"{key}: {type(error).__name__}: {error}" for key, error in sorted(failures.items())]
        super().__init__(
            f"{asset}: {len(failures)} of {len(failures) + succeeded} partitions failed "
            f"(the other {succeeded} were written):\n" + "\n".join(lines)
        )


def _metadata(result: WriteResult, report: BuildReport, work: PartitionWork, root: str) -> dict[str, Any]:
    manifest = result.manifest
    listed = sorted(manifest.entries.items())[:_MAX_LISTED_ARTIFACTS]
    table = "| key | bytes | sha256 |\n|---|---:|---|\n" + "\n".join(
        f"| `{key}` | {entry.size} | `{entry.sha256}` |" for key, entry in listed
    )
    if len(manifest.entries) > len(listed):
        table += f"\n\n{len(manifest.entries) - len(listed)} more in the manifest."
    metadata: dict[str, Any] = {
        "source": work.source,
        "artifacts": len(manifest.entries),
        "bytes": MetadataValue.int(manifest.total_bytes),
        "written": result.written,
        "skipped_identical": result.skipped,
        "bytes_written": MetadataValue.int(result.bytes_written),
        "removed_stale": len(result.removed),
        "input_unchanged": result.unchanged_input,
        "manifest": MetadataValue.path(f"{root}/{result.manifest_key}"),
        "manifest_sha256": manifest.digest,
        "artifact_hashes": MetadataValue.md(table),
        **{f"count_{name}": value for name, value in sorted(report.counts.items())},
        "warnings": report.num_warnings,
    }
    if result.kept_shared:
        metadata["stale_kept_shared"] = len(result.kept_shared)
    if work.describe is not None and not result.unchanged_input:
        metadata.update(work.describe(report))
    return metadata


class ClipArtifactIOManager(ConfigurableIOManager):
    """Writes artifacts at their layout keys, content-hashed, idempotent, atomically, in parallel."""

    output: ResourceDependency[StorageResource]
    partitions_in_parallel: int = Field(
        default=PARTITIONS_IN_PARALLEL,
        ge=1,
        le=16,
        description=(
            "Partitions of a run written at once. Above 1 only where clip ids cannot collide across "
            "videos (derived from the source path): see clip_assets/batch_writer.py."
        ),
    )

    def handle_output(self, context: OutputContext, obj: FamilyBatch) -> None:
        family = context.asset_key.to_user_string()
        storage = self.output.get_storage()
        failures = dict(obj.failures)
        done: dict[str, dict[str, Any]] = {}
        for outcome in write_partitions(storage, family, obj.work, obj.max_workers, self.partitions_in_parallel):
            key, report = outcome.work.partition_key, outcome.report
            if outcome.error is not None:
                failures[key] = outcome.error
                continue
            assert outcome.result is not None
            for warning in report.warnings:
                context.log.warning(f"{key}: {warning}")
            if report.num_warnings > len(report.warnings):
                context.log.warning(f"{key}: ... and {report.num_warnings - len(report.warnings)} more")
            done[key] = _metadata(outcome.result, report, outcome.work, storage.root)

        if failures:
            if not done and len(failures) == 1:
                raise next(iter(failures.values()))
            for key, metadata in done.items():  # Dagster records nothing for a failed output: we do
                context.log_event(AssetMaterialization(context.asset_key, partition=key, metadata=metadata))
            raise PartitionsFailed(family, failures, len(done))
        if len(done) == 1:
            context.add_output_metadata(next(iter(done.values())))
        else:
            for key, metadata in done.items():
                obj.record_partition_metadata(key, metadata)

    def load_input(self, context: InputContext) -> PartitionManifest | dict[str, PartitionManifest | None] | None:
        """A downstream asset gets the manifest(s) of what was written, not the bytes themselves.

        A partitioned run gets its partition's manifest (None if never materialized); an unpartitioned
        downstream (the dataset roll-up) gets every partition's, by key.
        """
        family = context.asset_key.to_user_string()
        writer = ArtifactWriter(self.output.get_storage())
        if context.has_partition_key:
            return writer.load_manifest(family, context.asset_partition_key)
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        return {key: writer.load_manifest(family, key) for key in keys}
