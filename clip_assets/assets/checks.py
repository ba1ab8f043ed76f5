"""Asset checks, one per output family: is what the manifests record still there and sound?

They read every recorded object back (clip-sized objects, a few at a time) and decode it, so they cost
a full read of the outputs they cover; the writer already verifies as it writes, so `curate_videos`
does not run them (a materialization launched on the assets from the UI does, after writing). They
cover the partitions of the run they are in: one, a backfill's range, or, in a run with no partition
(the `verify_outputs` job launched as is), every partition. A failure names each damaged artifact and
its partition; re-materializing the partition rewrites whatever is not as recorded.

They are not partitioned checks: Dagster 1.13 records one result per check per run, and a batched run
covers many partitions, so the result belongs to the run's partitions together.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    MetadataValue,
    asset_check,
)

from clip_assets import layout
from clip_assets.artifact_writer import ArtifactWriter
from clip_assets.assets.families import OUTPUT_FAMILIES
from clip_assets.assets.partitions import PARTITIONS_NAME
from clip_assets.resources import StorageResource, WriterSettingsResource
from clip_assets.verification import Problem, verify_cross_references, verify_entries

_MAX_LISTED_PROBLEMS = 50


def _partitions(context: AssetCheckExecutionContext) -> list[str]:
    """The run's partitions: a backfill's range, one partition, or (a run with none) all of them."""
    run = context.op_execution_context
    if run.has_partition_key_range:
        return sorted(run.partition_keys)
    if run.has_partition_key:
        return [run.partition_key]
    return sorted(context.instance.get_dynamic_partitions(PARTITIONS_NAME))


def _intact_check(asset: AssetsDefinition) -> AssetChecksDefinition:
    family = asset.key.to_user_string()
    others = [other.key.to_user_string() for other in OUTPUT_FAMILIES if other is not asset]

    def intact(
        context: AssetCheckExecutionContext, output: StorageResource, writer_settings: WriterSettingsResource
    ) -> AssetCheckResult:
        storage = output.get_storage()
        settings = writer_settings.to_settings(storage.root)
        writer = ArtifactWriter(storage)
        problems: list[tuple[str, Problem]] = []
        checked = bytes_read = 0
        partitions = _partitions(context)
        for key in partitions:
            manifest = writer.load_manifest(family, key)
            if manifest is None:
                problems.append((key, Problem(layout.manifest_key(family, key), "never materialized")))
                continue
            verification = verify_entries(storage, manifest)
            checked += verification.checked
            bytes_read += verification.bytes_read
            siblings = {name: writer.load_manifest(name, key) for name in others}
            found = verification.problems + verify_cross_references(storage, manifest, siblings, settings)
            problems += [(key, problem) for problem in found]
        listed = problems[:_MAX_LISTED_PROBLEMS]
        table = "| partition | artifact | problem |\n|---|---|---|\n" + "\n".join(
            f"| `{key}` | `{p.key}` | {p.problem} |" for key, p in listed
        )
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(str(p) for _, p in problems[:3]) or f"{checked} objects verified",
            metadata={
                "partitions": len(partitions),
                "objects_verified": checked,
                "bytes_read": MetadataValue.int(bytes_read),
                "problems": len(problems),
                **({"damaged": MetadataValue.md(table)} if problems else {}),
            },
        )

    return asset_check(
        asset=asset,
        name="intact",
        description=f"Every {family} object the manifests record exists with its size and sha256, decodes as what "
        "it claims to be, and agrees with the other families' files; for the run's partitions, or all of them.",
    )(intact)


output_checks = [_intact_check(asset) for asset in OUTPUT_FAMILIES]
