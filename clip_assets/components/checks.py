"""Asset checks, one per output family: is what the manifests record still there and sound?

They read every recorded object back (clip-sized objects, a few at a time) and decode it, so they cost
a full read of the outputs they cover. The writer already verifies as it writes, so `curate_videos`
itself does not run them: by default they run after every successful curate run, over its
partitions, in a run of their own (`verify_after_write`, the `verify_after_curate` sensor), so the
write path never waits on the re-read; a materialization launched from the UI runs them after writing.
They cover the partitions of the run they are in (one, a range, or, in a run with no partition, the
`verify_outputs` job launched as is, every partition) and every partition an earlier check found
damaged (`clip_assets.engine.open_problems`): a failure stays until a check finds that partition sound
again, however many checks of other partitions pass in between. A failure names each damaged artifact
and its partition; re-materializing the partition rewrites whatever is not as recorded.

They are not partitioned checks. Dagster 1.13's partitioned checks (a preview) would record a
single-partition run's result on its partition, but a range run gets one result with no partition
(its partitions show as skipped), and a run with no partition fails outright once the asset has
materializations ("Cannot access partition_key for a non-partitioned run"), which would break
`verify_outputs` over the whole dataset. So every run records one result for the partitions it
covered, listed in its metadata with the partition of each damaged artifact.
"""

from collections.abc import Sequence

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from clip_assets import layout
from clip_assets.components.names import DatasetNames
from clip_assets.components.partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from clip_assets.components.resources import StorageResource, WriterSettingsResource
from clip_assets.engine.manifest import load_manifest
from clip_assets.engine.open_problems import load_open_problems, record_checked
from clip_assets.engine.verification import verify_cross_references, verify_entries
from clip_assets.families import OutputFamily
from clip_assets.families.base import Problem

_MAX_LISTED_PROBLEMS = 50


def _partitions(context: AssetCheckExecutionContext, names: DatasetNames) -> list[str]:
    """The run's partitions: a range, one partition, or (a run with none) all of them.

    Read from the run's tags: a run of the checks alone (`verify_outputs`) is not a partitioned run to
    Dagster, whose partition accessors refuse a range there, but it carries the same tags."""
    tags = context.run.tags
    known = context.instance.get_dynamic_partitions(names.partitions)
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first, last = known.index(tags[RANGE_START_TAG]), known.index(tags[RANGE_END_TAG])
        return sorted(known[first : last + 1])
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    return sorted(known)


def _intact_check(names: DatasetNames, family: OutputFamily, families: Sequence[OutputFamily]) -> AssetChecksDefinition:
    others = [other.name for other in families if other is not family]

    @asset_check(
        asset=names.key(family.name),
        name="intact",
        required_resource_keys={names.output, names.writer_settings},
        description=f"Every {family.name} object the manifests record exists with its size and sha256, decodes as "
        "what it claims to be, and agrees with the other families' files; for the run's partitions, or all of them.",
    )
    def intact(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        writer_settings: WriterSettingsResource = getattr(context.resources, names.writer_settings)
        storage = output.get_storage()
        settings = writer_settings.to_settings(storage.root)
        live = set(context.instance.get_dynamic_partitions(names.partitions))
        earlier = load_open_problems(storage, family.name)
        # The run's partitions, and those an earlier check found damaged: still damaged until found sound.
        partitions = sorted(set(_partitions(context, names)) | (earlier.keys() & live))
        found: dict[str, list[Problem]] = {}
        checked = bytes_read = 0
        for key in partitions:
            manifest = load_manifest(storage, family.name, key)
            if manifest is None:
                found[key] = [Problem(layout.manifest_key(family.name, key), "never materialized")]
                continue
            verification = verify_entries(storage, manifest, family)
            checked += verification.checked
            bytes_read += verification.bytes_read
            siblings = {name: load_manifest(storage, name, key) for name in others}
            found[key] = verification.problems + verify_cross_references(storage, manifest, family, siblings, settings)
        still_open = record_checked(storage, family.name, found, gone=earlier.keys() - live)
        problems = [(key, problem) for key, listed in sorted(still_open.items()) for problem in listed]
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
                "partitions_checked": MetadataValue.json(partitions[:_MAX_LISTED_PROBLEMS]),
                "objects_verified": checked,
                "bytes_read": MetadataValue.int(bytes_read),
                "problems": len(problems),
                "partitions_damaged": len(still_open),
                **({"damaged": MetadataValue.md(table)} if problems else {}),
            },
        )

    return intact


def intact_checks(names: DatasetNames, families: Sequence[OutputFamily]) -> list[AssetChecksDefinition]:
    """One `intact` check per family of the dataset."""
    return [_intact_check(names, family, families) for family in families]
