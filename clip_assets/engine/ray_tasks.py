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
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.partition import PartitionOutcome, WriteJob, write_partition
from clip_assets.engine.writer import ArtifactWriter
from clip_assets.families import OutputFamily
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage, StorageSpec

T = TypeVar("T")

# Re-runs of a partition whose task's worker process or node died (not of one whose write failed: that
# is in its outcome, and a re-run would fail the same way).
TASK_RETRIES = 3
# Tasks submitted, per task the cluster can run at once: enough that a node never waits for work, few
# enough that a run of 5,000 partitions does not hold 5,000 task specs and results at once.
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
    """Ray, connected to the cluster at RAY_ADDRESS unless this process is connected already."""
    imported = sys.modules.get("ray")
    if imported is not None and imported.is_initialized():
        return imported
    address = os.environ.get(RAY_ADDRESS_VAR)
    if not address:
        raise RayBackendError(
            f"parallel_backend 'ray' writes partitions on a Ray cluster, and this process is connected to none: "
            f"set {RAY_ADDRESS_VAR} to the cluster's address (a run launched as a Ray job has it), or set "
            "parallel_backend to 'threads'"
        )
    try:
        import ray
    except ImportError:
        raise RayBackendError(
            "parallel_backend 'ray' needs Ray: pip install 'clip-assets[ray]' on the run's image and every node"
        ) from None
    ray.init(address=address, log_to_driver=False)
    return ray


def write_partitions_as_tasks(
    task: PartitionTask, partition_keys: Sequence[str], log: logging.Logger
) -> Iterator[PartitionOutcome]:
    """Each partition as a task on the cluster; yields each outcome as its task ends (failures included)."""
    tasks = _as_tasks(write_one, task, partition_keys, task.settings.ray_cpus_per_partition, "write_partition")
    for key, result in tasks:
        if isinstance(result, BaseException):  # its worker or node died more often than Ray re-runs it
            outcome = PartitionOutcome(key, source=f"{task.inbox.url}/{key}")
            error = PartitionTaskError(
                f"{key}: its Ray task ended without an outcome (up to {TASK_RETRIES} re-runs): "
                f"{type(result).__name__}: {result}"
            )
            outcome.fail_unsettled(task.families, error)
            yield outcome
            continue
        for level, message in result.log:
            log.log(level, message)
        yield result.outcome


def _open_and_call(call: tuple[Callable[[Storage, str], T], StorageSpec], partition_key: str) -> T:
    function, storage = call
    return function(storage.open(), partition_key)


def map_partitions(
    function: Callable[[Storage, str], T], storage: StorageSpec, partition_keys: Sequence[str], cpus: float
) -> Iterator[tuple[str, T]]:
    """`function(storage, key)` for each partition as a Ray task, the storage opened on the task's node from
    its spec; yields (key, result) as tasks end. An error of `function` is raised here as itself."""
    for key, result in _as_tasks(_open_and_call, (function, storage), partition_keys, cpus, function.__name__):
        if isinstance(result, BaseException):
            raise result
        yield key, result


def _as_tasks(
    function: Callable[[Any, str], Any], shared: Any, partition_keys: Sequence[str], cpus: float, name: str
) -> Iterator[tuple[str, Any]]:
    """`function(shared, key)` per key, as Ray tasks of `cpus` CPUs spread over the nodes, `shared` sent to
    the cluster once; yields (key, result or the exception it ended with) in the order tasks end."""
    ray = _connect()
    remote = ray.remote(function).options(
        num_cpus=cpus, max_retries=TASK_RETRIES, retry_exceptions=False, scheduling_strategy="SPREAD", name=name
    )
    reference = ray.put(shared)
    ahead = TASKS_PER_CPU_AHEAD * max(1, int(ray.cluster_resources().get("CPU", 1) / cpus))
    waiting = iter(partition_keys)
    running: dict[Any, str] = {}

    def submit(count: int) -> None:
        for key in [key for _, key in zip(range(count), waiting, strict=False)]:
            running[remote.remote(reference, key)] = key

    submit(ahead)
    while running:
        (done,), _ = ray.wait(list(running), num_returns=1)
        key = running.pop(done)
        submit(1)
        try:
            result = ray.get(done)
        except ray.exceptions.RayTaskError as failed:  # the function raised: the error itself
            yield key, failed.as_instanceof_cause()
            continue
        except Exception as lost:  # the worker or node died more often than Ray re-runs a task
            yield key, lost
            continue
        yield key, result
