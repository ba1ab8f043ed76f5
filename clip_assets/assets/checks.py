"""Asset checks, one per output family, per partition: is what the manifest records still there and sound?

They read every recorded object back (clip-sized objects, a few at a time) and decode it, so they cost
a full read of the partition's outputs; the writer already verifies as it writes, so the main job
does not run them. Run them from the UI (a partition's "Execute checks"), with the `verify_outputs`
job, or after anything touched the storage. A failure names each damaged artifact; re-materializing
the partition rewrites whatever is not as recorded.
"""

import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from clip_assets import layout
from clip_assets.artifact_writer import ArtifactWriter
from clip_assets.assets.families import OUTPUT_FAMILIES
from clip_assets.assets.partitions import processed_video_partitions
from clip_assets.resources import StorageResource, WriterSettingsResource
from clip_assets.verification import Problem, verify_cross_references, verify_entries

_MAX_LISTED_PROBLEMS = 50


def _intact_check(asset: AssetsDefinition) -> AssetChecksDefinition:
    family = asset.key.to_user_string()
    others = [other.key.to_user_string() for other in OUTPUT_FAMILIES if other is not asset]

    def intact(
        context: AssetCheckExecutionContext, output: StorageResource, writer_settings: WriterSettingsResource
    ) -> AssetCheckResult:
        storage = output.get_storage()
        settings = writer_settings.to_settings(storage.root)
        writer = ArtifactWriter(storage)
        problems: list[Problem] = []
        checked = bytes_read = 0
        for key in sorted(context.partition_keys):
            manifest = writer.load_manifest(family, key)
            if manifest is None:
                problems.append(Problem(layout.manifest_key(family, key), f"{key} was never materialized"))
                continue
            verification = verify_entries(storage, manifest)
            checked += verification.checked
            bytes_read += verification.bytes_read
            siblings = {name: writer.load_manifest(name, key) for name in others}
            problems += verification.problems + verify_cross_references(storage, manifest, siblings, settings)
        listed = problems[:_MAX_LISTED_PROBLEMS]
        table = "| artifact | problem |\n|---|---|\n" + "\n".join(f"| `{p.key}` | {p.problem} |" for p in listed)
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(str(p) for p in problems[:3]) or f"{checked} objects verified",
            metadata={
                "objects_verified": checked,
                "bytes_read": MetadataValue.int(bytes_read),
                "problems": len(problems),
                **({"damaged": MetadataValue.md(table)} if problems else {}),
            },
        )

    # Partitioned checks are a preview in Dagster 1.13 and would warn on every load of the code location;
    # what this project relies on is pinned by its tests (test_checks.py).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PreviewWarning)
        return asset_check(
            asset=asset,
            name="intact",
            partitions_def=processed_video_partitions,
            description=f"Every {family} object the partition's manifest records exists with its size and sha256, "
            "decodes as what it claims to be, and agrees with the other families' files.",
        )(intact)


output_checks = [_intact_check(asset) for asset in OUTPUT_FAMILIES]
