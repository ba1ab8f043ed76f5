"""The assets of one curated dataset: the inbox (external) and the output families, one step for all of them.

Every output family is its own asset (separately materializable: the UI and `--select` pick any
subset), but one step writes the selected ones: it reads each partition's input once and hands every
clip to every selected family's builder (`clip_assets.engine.partition`). Each (family, partition) is
recorded on its own: a bad video fails only its own partition, a storage error only the family it hit.
"""

import inspect
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetOut,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    multi_asset,
)

from clip_assets import layout
from clip_assets.components.metadata import dagster_value
from clip_assets.components.names import INBOX_GROUP, OUTPUT_GROUP, WRITE_POOL, DatasetNames
from clip_assets.components.partitions import video_partitions
from clip_assets.components.resources import StorageResource, ValidationLimitsResource, WriterSettingsResource
from clip_assets.engine.batches import write_partitions
from clip_assets.engine.partition import PartitionOutcome, WriteJob
from clip_assets.engine.writer import WriteResult
from clip_assets.families import BuildReport, OutputFamily

# Every artifact is in the manifest; the event log gets a sample (each row costs ~170 bytes in every event).
_MAX_LISTED_ARTIFACTS = 20
# The inbox file a materialization was written from (its fingerprint): the sensor skips a file it finds
# already written, so a restart or a partition registered by `clip-assets discover` runs nothing twice.
INPUT_FINGERPRINT = "input_fingerprint"


def inbox_spec(names: DatasetNames, owners: Sequence[str]) -> AssetSpec:
    """The processed-video files themselves: produced upstream, registered by the sensor or `discover`."""
    return AssetSpec(
        names.key("processed_videos"),
        group_name=names.group(INBOX_GROUP),
        partitions_def=video_partitions(names.partitions),
        kinds={"parquet"},
        owners=list(owners),
        description=(
            "Processed-video Parquet files (docs/processed-video-format.md) in the inbox, one partition per file, "
            "written by an upstream curation pipeline or `clip-assets ingest`. Registered by the "
            f"`{names.name('processed_video_sensor')}` or `clip-assets discover`."
        ),
    )


class PartitionsFailed(Exception):
    """Some partitions of a run failed; the others were written and are recorded as materialized."""

    def __init__(
        self, families: Sequence[str], failures: Mapping[str, Mapping[str, Exception]], succeeded: int
    ) -> None:
        self.failures = failures
        lines = []
        for key, by_family in sorted(failures.items()):
            errors = list(by_family.items())
            if len({id(error) for _, error in errors}) == 1:  # one cause for every family: the input
                lines.append(f"{key}: {type(errors[0][1]).__name__}: {errors[0][1]}")
            else:
                lines += [f"{key}: {family}: {type(error).__name__}: {error}" for family, error in errors]
        super().__init__(
            f"{', '.join(families)}: {len(failures)} of {len(failures) + succeeded} partitions failed "
            f"(the other {succeeded} were written):\n" + "\n".join(lines)
        )


def _metadata(
    family: OutputFamily, result: WriteResult, report: BuildReport, outcome: PartitionOutcome, root: str
) -> dict[str, Any]:
    manifest = result.manifest
    listed = sorted(manifest.entries.items())[:_MAX_LISTED_ARTIFACTS]
    table = "| key | bytes | sha256 |\n|---|---:|---|\n" + "\n".join(
        f"| `{key}` | {entry.size} | `{entry.sha256}` |" for key, entry in listed
    )
    if len(manifest.entries) > len(listed):
        table += f"\n\n{len(manifest.entries) - len(listed)} more in the manifest."
    manifest_uri = layout.full_location(root, result.manifest_key)
    metadata: dict[str, Any] = {
        "source": outcome.source,
        INPUT_FINGERPRINT: outcome.fingerprint,
        "artifacts": len(manifest.entries),
        "bytes": MetadataValue.int(manifest.total_bytes),
        "written": result.written,
        "skipped_identical": result.skipped,
        "bytes_written": MetadataValue.int(result.bytes_written),
        "removed_stale": len(result.removed),
        "input_unchanged": result.unchanged_input,
        "manifest": MetadataValue.path(manifest_uri),
        "dagster/uri": MetadataValue.path(manifest_uri),
        "manifest_sha256": manifest.digest,
        "artifact_hashes": MetadataValue.md(table),
        **{f"count_{name}": value for name, value in sorted(report.counts.items())},
        "warnings": report.num_warnings,
    }
    if result.kept_shared:
        metadata["stale_kept_shared"] = len(result.kept_shared)
    if not result.unchanged_input:
        if family.row_count is not None:
            metadata["dagster/row_count"] = MetadataValue.int(family.row_count(report))
        if family.describe is not None:
            metadata.update({name: dagster_value(value) for name, value in family.describe(report).items()})
    return metadata


def _out(names: DatasetNames, family: OutputFamily, owners: Sequence[str]) -> AssetOut:
    """The family's asset: its written results go to the families' IO manager, which what is downstream
    reads them through."""
    source_file = inspect.getsourcefile(family.builder)
    metadata: dict[str, Any] = {}
    if source_file is not None:
        line = inspect.getsourcelines(family.builder)[1]
        reference = LocalFileCodeReference(file_path=source_file, line_number=line, label=f"{family.name} builder")
        metadata["dagster/code_references"] = CodeReferencesMetadataValue(code_references=[reference])
    if family.tables:
        columns = [TableColumn(c.name, c.type, description=c.description) for c in family.tables]
        metadata["dagster/column_schema"] = TableSchema(columns=columns)
    return AssetOut(
        key=names.key(family.name),
        description=family.description,
        kinds=set(family.kinds),
        group_name=names.group(OUTPUT_GROUP),
        owners=list(owners),
        metadata=metadata,
        io_manager_key=names.families_io,
        is_required=False,
    )


def output_families_asset(
    names: DatasetNames, families: Sequence[OutputFamily], partitions_per_run: int, owners: Sequence[str]
) -> AssetsDefinition:
    """Every output family as an asset, written by one step that reads each partition's input once.

    A backfill of N partitions runs as ceil(N / `partitions_per_run`) runs, each handling its
    partitions in turn.
    """
    by_key = {names.key(family.name): family for family in families}

    # `backfill_policy` is beta in Dagster 1.13 and would warn on every load of the code location, in
    # every command; what this project relies on is pinned by its tests (test_batches.py).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=BetaWarning)

        @multi_asset(
            name=names.name("write_clip_outputs"),
            outs={family.name: _out(names, family, owners) for family in families},
            deps=[names.key("processed_videos")],
            can_subset=True,
            partitions_def=video_partitions(names.partitions),
            backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run),
            pool=WRITE_POOL,
            required_resource_keys={names.inbox, names.output, names.writer_settings, names.validation_limits},
        )
        def write_clip_outputs(context: AssetExecutionContext) -> Iterator[Output[dict[str, WriteResult]]]:
            selected = [family for key, family in by_key.items() if key in context.selected_asset_keys]
            job = _job(context, names, selected, families)
            writing = getattr(context.resources, names.writer_settings)
            keys = sorted(context.partition_keys)
            done: dict[str, dict[str, dict[str, Any]]] = {}
            written: dict[str, dict[str, WriteResult]] = {}
            failures: dict[str, dict[str, Exception]] = {}
            for outcome in write_partitions(job, keys, context.log, writing.partitions_in_parallel, writing.read_ahead):
                _log_warnings(context, outcome)
                for family in selected:
                    if family.name in outcome.errors:
                        failures.setdefault(outcome.partition_key, {})[family.name] = outcome.errors[family.name]
                    else:
                        result, report = outcome.results[family.name], outcome.report(family)
                        metadata = _metadata(family, result, report, outcome, job.output.root)
                        done.setdefault(family.name, {})[outcome.partition_key] = metadata
                        written.setdefault(family.name, {})[outcome.partition_key] = result
            if failures:
                _record_and_fail(context, names, selected, done, failures, len(keys))
            yield from _results(context, names, done, written, keys)

    return write_clip_outputs


def _job(
    context: AssetExecutionContext,
    names: DatasetNames,
    selected: Sequence[OutputFamily],
    families: Sequence[OutputFamily],
) -> WriteJob:
    resources = context.resources
    inbox: StorageResource = getattr(resources, names.inbox)
    output: StorageResource = getattr(resources, names.output)
    writer_settings: WriterSettingsResource = getattr(resources, names.writer_settings)
    limits: ValidationLimitsResource = getattr(resources, names.validation_limits)
    output_storage = output.get_storage()
    settings = writer_settings.to_settings(output_storage.root)
    layout.embedding_prefix(settings.embedding_algorithm)  # a configuration error, not a file's
    layout.check_embedding_model(settings.embedding_algorithm, settings.embedding_version)
    return WriteJob(
        tuple(selected),
        inbox.get_storage(),
        output_storage,
        settings,
        limits.to_limits(),
        tuple(families),
        run_id=context.run.run_id,
        inbox_spec=inbox.spec(),
        output_spec=output.spec(),
    )


def _log_warnings(context: AssetExecutionContext, outcome: PartitionOutcome) -> None:
    for family, report in outcome.reports.items():
        for warning in report.warnings:
            context.log.warning(f"{outcome.partition_key}: {family}: {warning}")
        if report.num_warnings > len(report.warnings):
            context.log.warning(
                f"{outcome.partition_key}: {family}: ... and {report.num_warnings - len(report.warnings)} more"
            )


def _record_and_fail(
    context: AssetExecutionContext,
    names: DatasetNames,
    selected: Sequence[OutputFamily],
    done: Mapping[str, Mapping[str, dict[str, Any]]],
    failures: Mapping[str, Mapping[str, Exception]],
    num_partitions: int,
) -> None:
    """Dagster records nothing for a failed step: the written (family, partition)s are recorded here.

    A single partition failing the same way in every family fails with that error itself, as a
    one-partition run of a bad video should read.
    """
    if num_partitions == 1 and not done:
        errors = list(next(iter(failures.values())).values())
        if all(error is errors[0] for error in errors):
            raise errors[0]
    for family, by_partition in done.items():
        for key, metadata in by_partition.items():
            context.log_event(AssetMaterialization(names.key(family), partition=key, metadata=metadata))
    succeeded = num_partitions - len(failures)
    raise PartitionsFailed([family.name for family in selected], failures, succeeded)


def _results(
    context: AssetExecutionContext,
    names: DatasetNames,
    done: Mapping[str, Mapping[str, dict[str, Any]]],
    written: Mapping[str, dict[str, WriteResult]],
    keys: Sequence[str],
) -> Iterator[Output[dict[str, WriteResult]]]:
    """One output per family, its written results by partition for the families' IO manager, with its
    partition's metadata, or each partition's when the run has several."""
    for family, by_partition in done.items():
        if len(keys) == 1:
            yield Output(written[family], output_name=family, metadata=by_partition[keys[0]])
            continue
        for partition, metadata in by_partition.items():
            context.add_asset_metadata(metadata, asset_key=names.key(family), partition_key=partition)
        yield Output(written[family], output_name=family)
