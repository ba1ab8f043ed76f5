"""A run's partitions as Ray tasks, spread over the nodes of the cluster the run's process is connected to.

`write_partitions` (clip_assets.engine.batches) comes here when the settings say `parallel_backend: ray`.
Each partition is one task running `write_partition`, as the threaded path does, on a node of the
cluster: the task opens the inbox and the output itself from their specs (URL and options; a client
never crosses processes), so every node needs the storage's credentials from its own environment. A
task whose worker process or node dies is re-run by Ray (`TASK_RETRIES`); a partition's write is
idempotent (content-hashed, under its lock, its intent settled by whoever finishes it), so the re-run
finishes what the dead one started. Each outcome, and what the task logged, comes back to the run's
process as soon as the task ends, in the order tasks end.

Ray is imported here only, and only when this backend is chosen.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.partition import PartitionOutcome, WriteJob, write_partition
from clip_assets.engine.writer import ArtifactWriter
from clip_assets.families import OutputFamily
from clip_assets.settings import WriterSettings
from clip_assets.storage import StorageSpec

# Re-runs of a partition whose task's worker process or node died (not of one whose write failed: that
# is in its outcome, and a re-run would fail the same way).
TASK_RETRIES = 3
# Tasks submitted ahead of those running, per CPU of the cluster: enough that a node never waits for
# work, few enough that a run of 5,000 partitions does not hold 5,000 task specs and results at once.
TASKS_PER_CPU_AHEAD = 4
RAY_ADDRESS_VAR = "RAY_ADDRESS"


class RayBackendError(RuntimeError):
    """The Ray backend cannot run: no cluster to connect to, or Ray missing; the message says what to do."""


class PartitionTaskError(RuntimeError):
    """A partition's task did not come back: its worker or node died more often than Ray re-runs it, or an
    error of the write could not be sent back as itself."""


@dataclass(frozen=True)
class PartitionTask:
    """What every task of a run is handed: a `WriteJob` with its storages as specs, not clients."""

    families: tuple[OutputFamily, ...]
    dataset_families: tuple[OutputFamily, ...]
    settings: WriterSettings
    limits: ValidationLimits
    inbox: StorageSpec
    output: StorageSpec
    run_id: str = ""


@dataclass
class TaskResult:
    """A task's outcome and the log lines its write produced, for the run's own log."""

    outcome: PartitionOutcome
    log: list[tuple[int, str]] = field(default_factory=list)


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def write_one(task: PartitionTask, partition_key: str) -> TaskResult:
    """One partition on a Ray worker (plain Python: Ray calls it, tests may too)."""
    output = task.output.open()
    job = WriteJob(
        task.families, task.inbox.open(), output, task.settings, task.limits, task.dataset_families, task.run_id
    )
    writer = ArtifactWriter(
        output, max_workers=task.settings.max_workers, verify_unchanged=task.settings.verify_unchanged_outputs
    )
    # A logger of its own, not registered by name: one per task, gone with it.
    log = logging.Logger(f"clip_assets.partition.{partition_key}")
    collected = _Collected()
    log.addHandler(collected)
    outcome = write_partition(job, partition_key, writer, log)
    outcome.errors = {family: portable(error) for family, error in outcome.errors.items()}
    return TaskResult(outcome, collected.lines)


def portable(error: Exception) -> Exception:
    """The error itself if it survives the trip back to the run's process; else one that says the same."""
    try:
        returned = pickle.loads(pickle.dumps(error))
    except Exception:
        return PartitionTaskError(f"{type(error).__name__}: {error}")
    return returned if str(returned) == str(error) else PartitionTaskError(f"{type(error).__name__}: {error}")


def task_of(job: WriteJob) -> PartitionTask:
    if job.inbox_spec is None or job.output_spec is None:
        raise RayBackendError(
            "parallel_backend 'ray' opens the storages on the cluster's nodes: the WriteJob needs inbox_spec and "
            "output_spec (their URLs and options)"
        )
    return PartitionTask(
        job.families, job.dataset_families, job.settings, job.limits, job.inbox_spec, job.output_spec, job.run_id
    )


def _connect() -> Any:
    try:
        import ray
    except ImportError:
        raise RayBackendError(
            "parallel_backend 'ray' needs Ray: pip install 'clip-assets[ray]' on the run's image and every node"
        ) from None
    if not ray.is_initialized():
        address = os.environ.get(RAY_ADDRESS_VAR)
        if not address:
            raise RayBackendError(
                f"parallel_backend 'ray' writes partitions on a Ray cluster, and this process is connected to "
                f"none: set {RAY_ADDRESS_VAR} to the cluster's address (a run launched as a Ray job has it), "
                "or set parallel_backend to 'threads'"
            )
        ray.init(address=address, log_to_driver=False)
    return ray


def write_partitions_as_tasks(
    task: PartitionTask, partition_keys: Sequence[str], log: logging.Logger
) -> Iterator[PartitionOutcome]:
    """Each partition as a task on the cluster; yields each outcome as its task ends (failures included)."""
    ray = _connect()
    remote = ray.remote(write_one).options(
        num_cpus=task.settings.ray_cpus_per_partition,
        max_retries=TASK_RETRIES,
        retry_exceptions=False,
        scheduling_strategy="SPREAD",
        name="write_partition",
    )
    shared = ray.put(task)
    ahead = max(1, int(ray.cluster_resources().get("CPU", 1) / task.settings.ray_cpus_per_partition))
    ahead *= TASKS_PER_CPU_AHEAD
    waiting = iter(partition_keys)
    running: dict[Any, str] = {}

    def submit(count: int) -> None:
        for key in [key for _, key in zip(range(count), waiting, strict=False)]:
            running[remote.remote(shared, key)] = key

    submit(ahead)
    while running:
        (done,), _ = ray.wait(list(running), num_returns=1)
        key = running.pop(done)
        submit(1)
        try:
            result: TaskResult = ray.get(done)
        except Exception as exc:  # the task's worker or node died more often than Ray re-runs it
            outcome = PartitionOutcome(key, source=f"{task.inbox.url}/{key}")
            error = PartitionTaskError(
                f"{key}: its Ray task did not finish after {TASK_RETRIES} re-runs: {type(exc).__name__}: {exc}"
            )
            outcome.fail_unsettled(task.families, error)
            yield outcome
            continue
        for level, message in result.log:
            log.log(level, message)
        yield result.outcome
