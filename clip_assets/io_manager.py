"""The IO manager that owns writing: every family asset hands it artifacts, it hands back metadata."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency

from clip_assets.artifact_writer import ArtifactWriter
from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.manifest import PartitionManifest
from clip_assets.resources import StorageResource

_MAX_LISTED_ARTIFACTS = 100


@dataclass
class FamilyOutput:
    """What a family asset returns: a (possibly lazy) stream of artifacts and how to describe them."""

    source: str
    artifacts: Iterable[Artifact]
    report: BuildReport
    max_workers: int
    # Called after writing, for metadata that needs the stream consumed (e.g. a preview image).
    extra_metadata: Callable[[], dict[str, Any]] = field(default=lambda: {})


class ClipArtifactIOManager(ConfigurableIOManager):
    """Writes artifacts at their layout keys, content-hashed, idempotent, atomically, in parallel."""

    output: ResourceDependency[StorageResource]

    def handle_output(self, context: OutputContext, obj: FamilyOutput) -> None:
        family = context.asset_key.to_user_string()
        writer = ArtifactWriter(self.output.get_storage(), max_workers=obj.max_workers)
        result = writer.write(family, context.partition_key, obj.source, obj.artifacts)
        for warning in obj.report.warnings:
            context.log.warning(warning)
        if obj.report.num_warnings > len(obj.report.warnings):
            context.log.warning(f"... and {obj.report.num_warnings - len(obj.report.warnings)} more warnings")
        manifest = result.manifest
        listed = sorted(manifest.entries.items())[:_MAX_LISTED_ARTIFACTS]
        table = "| key | bytes | sha256 |\n|---|---:|---|\n" + "\n".join(
            f"| `{key}` | {entry.size} | `{entry.sha256}` |" for key, entry in listed
        )
        if len(manifest.entries) > len(listed):
            table += f"\n\n{len(manifest.entries) - len(listed)} more in the manifest."
        metadata: dict[str, Any] = {
            "source": obj.source,
            "artifacts": len(manifest.entries),
            "bytes": MetadataValue.int(manifest.total_bytes),
            "written": result.written,
            "skipped_identical": result.skipped,
            "bytes_written": MetadataValue.int(result.bytes_written),
            "removed_stale": len(result.removed),
            "manifest": MetadataValue.path(f"{self.output.get_storage().root}/{result.manifest_key}"),
            "manifest_sha256": manifest.digest,
            "artifact_hashes": MetadataValue.md(table),
            **{f"count_{name}": value for name, value in sorted(obj.report.counts.items())},
            "warnings": obj.report.num_warnings,
        }
        if result.kept_shared:
            metadata["stale_kept_shared"] = len(result.kept_shared)
        metadata.update(obj.extra_metadata())
        context.add_output_metadata(metadata)

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
