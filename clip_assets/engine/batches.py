"""A run's partitions, one after another or a few at a time; each outcome as soon as it is known.

Each partition is written on its own (its lock, its manifests, its failure). Two inputs that claim
the same clip id are kept apart however many are in flight: each clip id is claimed atomically before
any of its files is written (clip_assets.engine.claims), so the second is refused naming the first.
One at a time is the default, for memory (below); more at once (`partitions_in_parallel`) pays off
because a partition's fixed cost is a sequence of round trips that on S3 waits on latency, and
locally one partition's reading overlaps another's writing (about 15% on W1, docs/performance.md).
One at a time, the next partition is read ahead while this one is written, which overlaps the same
steps and keeps the order (`write_partitions`).
With `parallel_backend: ray` each partition is a Ray task on a cluster instead (clip_assets.engine.ray_tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from clip_assets.engine.partition import PartitionOutcome, WriteJob, look_ahead, write_partition
from clip_assets.engine.writer import ArtifactWriter

# See the module's docstring for when more is safe; each partition in flight also holds its own read
# of the input (about 100 MB at the peak of inspection).
PARTITIONS_IN_PARALLEL = 1
# The next partition read while this one is written: one more input in memory at a time.
READ_AHEAD = True


def write_partitions(
    job: WriteJob,
    partition_keys: Sequence[str],
    log: logging.Logger,
    in_parallel: int = PARTITIONS_IN_PARALLEL,
    read_ahead: bool = READ_AHEAD,
) -> Iterator[PartitionOutcome]:
    """Write `partition_keys` in order; yields each partition's outcome (failures included) as it completes,
    so a caller can record it at once: a run killed half-way has recorded the half it wrote.

    One at a time, the next partition is read ahead (`read_ahead`): found, its manifests read and its input
    inspected while this one is hashed and written, so reading and writing overlap (hashlib, Arrow and the
    writes release the GIL) and each partition is still written whole, in order, under its own lock.

    With the Ray backend the job's storages travel as their specs (`WriteJob.inbox_spec`, `output_spec`),
    and outcomes come in the order the tasks end."""
    if job.settings.parallel_backend == "ray":
        from clip_assets.engine.ray_tasks import task_of, write_partitions_as_tasks

        yield from write_partitions_as_tasks(task_of(job), partition_keys, log)
        return
    writer = ArtifactWriter(
        job.output, max_workers=job.settings.max_workers, verify_unchanged=job.settings.verify_unchanged_outputs
    )
    if len(partition_keys) <= 1 or (in_parallel <= 1 and not read_ahead):
        for key in partition_keys:
            yield write_partition(job, key, writer, log)
        return
    if in_parallel <= 1:
        # One thread of its own: the next partition's reading must not wait behind this one's writes.
        with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
            ahead = reader.submit(look_ahead, job, partition_keys[0], writer, log)
            for index, key in enumerate(partition_keys):
                current = ahead
                if index + 1 < len(partition_keys):
                    ahead = reader.submit(look_ahead, job, partition_keys[index + 1], writer, log)
                yield write_partition(job, key, writer, log, current)
        return
    # Its own threads: a partition's writes wait on the shared writer pool, which must not be this one.
    with ThreadPoolExecutor(min(in_parallel, len(partition_keys)), thread_name_prefix="partitions") as pool:
        yield from pool.map(lambda key: write_partition(job, key, writer, log), partition_keys)
