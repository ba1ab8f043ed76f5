"""Run many partitions in batched runs from a command line, without a daemon: what CI jobs need.

Partitions are grouped into key ranges of consecutive partitions (at most CLIP_ASSETS_PARTITIONS_PER_RUN
each), and each range is one run of `curate_videos` in this process, recorded in the Dagster instance
at $DAGSTER_HOME like any other run, so the UI shows them. A UI backfill does the same through the
daemon; `dagster job backfill` would not batch (it launches one run per partition).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dagster import DagsterInstance, Definitions

from clip_assets.components.jobs import curate_job_name
from clip_assets.components.names import DatasetNames
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.engine.discovery import consecutive_ranges

# The command prints its own summary; Dagster's event log stays in the instance.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def run_backfill(
    instance: DagsterInstance,
    partition_keys: Sequence[str] | None,
    per_run: int,
    echo: Callable[[str], None],
    definitions: Definitions | None = None,
) -> bool:
    """Materialize every output family of `partition_keys` (all registered partitions when None).

    `definitions` default to the code location's (`clip_assets.definitions`); the benchmarks pass
    their own folders' so that they time this very loop. Returns whether every partition succeeded;
    a failed range names its failed partitions and why.
    """
    if definitions is None:
        from clip_assets.definitions import defs

        definitions = defs

    names = DatasetNames()
    order = instance.get_dynamic_partitions(names.partitions)
    keys = list(order) if partition_keys is None else list(partition_keys)
    unknown = sorted(set(keys) - set(order))
    if unknown:
        raise ValueError(f"not registered as partitions (run `clip-assets discover` first): {unknown}")
    job = definitions.resolve_job_def(curate_job_name(names))
    ok = True
    for batch in consecutive_ranges(keys, order, per_run):
        result = job.execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
            raise_on_error=False,
        )
        echo(
            f"curate_videos[{batch[0]}...{batch[-1]}] ({len(batch)} partitions): {result.run_id}: "
            f"{'success' if result.success else 'FAILED'}"
        )
        for event in result.get_step_failure_events():
            error = event.step_failure_data.error
            if error is not None:
                echo(f"  {event.step_key}: {(error.cause or error).message.strip()}")
        ok &= result.success
    return ok
