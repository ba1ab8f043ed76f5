"""Run many partitions in batched runs from a command line, without a daemon: what CI jobs and the demo need.

Partitions are grouped into key ranges of consecutive partitions (at most the dataset's
`partitions_per_run` each), and each range is one run of the dataset's curate job in this process,
recorded in the Dagster instance like any other run, so the UI shows them. Then, as the daemon's
sensors would: the families' `intact` checks over each range written, the clip index and vectors of
those ranges, and the dataset as a whole (near-duplicates, training shards, gallery, summary). A UI
backfill does the same through the daemon; `dagster job backfill` would not batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dagster import AssetCheckSeverity, DagsterInstance, Definitions, ExecuteInProcessResult

from clip_assets.components.jobs import build_job_name, curate_job_name, index_job_name, verify_job_name
from clip_assets.components.names import DatasetNames
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.engine.discovery import consecutive_ranges

# The command prints its own summary, one line per run and one per failure; Dagster's event log, with
# every stack trace, stays in the instance (`dagster run` / the UI show it).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class BackfillSteps:
    """What a backfill runs after writing the families: their checks, then the derived dataset."""

    checks: bool = True
    dataset: bool = True


def _summary(result: ExecuteInProcessResult, label: str, echo: Callable[[str], None]) -> bool:
    """One line for the run, then one per failed step naming its cause; returns whether it succeeded."""
    echo(f"{label}: {result.run_id}: {'success' if result.success else 'FAILED'}")
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            first, *more = (error.cause or error).message.strip().splitlines() or [""]
            echo(f"  {event.step_key}: {first}")
            for line in more:
                echo(f"    {line.strip()}")
    failed = False
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        # A warning (clips an export left out, a duplicate rate that jumped) is shown, not a failure.
        warning = evaluation.severity == AssetCheckSeverity.WARN
        failed |= not warning
        description = evaluation.description or "failed"
        level = "warning" if warning else "failed"
        echo(f"  {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: {level}: {description}")
    return result.success and not failed


def run_backfill(
    instance: DagsterInstance,
    definitions: Definitions,
    names: DatasetNames,
    partition_keys: Sequence[str] | None,
    per_run: int,
    echo: Callable[[str], None],
    steps: BackfillSteps = BackfillSteps(),
) -> bool:
    """Materialize every output family of `partition_keys` (all registered partitions when None), then the
    `steps`. Returns whether every run and check succeeded; a failed range names its failed partitions
    and why. Raises ValueError for partitions that are not registered."""
    order = instance.get_dynamic_partitions(names.partitions)
    keys = list(order) if partition_keys is None else list(partition_keys)
    unknown = sorted(set(keys) - set(order))
    if unknown:
        raise ValueError(
            f"not a partition of {names.label}: {unknown[0]!r}"
            + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
        )
    ranges = consecutive_ranges(keys, order, per_run)
    ok = True
    curate = definitions.resolve_job_def(curate_job_name(names))
    verify = definitions.resolve_job_def(verify_job_name(names)) if steps.checks else None
    for batch in ranges:
        tags = {RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]}
        written = curate.execute_in_process(instance=instance, run_config=QUIET, tags=tags, raise_on_error=False)
        ok &= _summary(written, f"{curate.name}[{batch[0]}...{batch[-1]}] ({len(batch)} partitions)", echo)
        if verify is not None and written.success:
            checked = verify.execute_in_process(instance=instance, run_config=QUIET, tags=tags, raise_on_error=False)
            ok &= _summary(checked, f"{verify.name}[{batch[0]}...{batch[-1]}]", echo)
    if steps.dataset and ranges:
        index = definitions.resolve_job_def(index_job_name(names))
        for batch in ranges:
            tags = {RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]}
            indexed = index.execute_in_process(instance=instance, run_config=QUIET, tags=tags, raise_on_error=False)
            ok &= _summary(indexed, f"{index.name}[{batch[0]}...{batch[-1]}]", echo)
        build = definitions.resolve_job_def(build_job_name(names))
        ok &= _summary(
            build.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False), build.name, echo
        )
    return ok
