"""Writing one family's partitions of a run, one after another or a few at a time. Free of Dagster:
benchmarks run it too.

Each partition is written on its own (its lock, its manifest, its failure). One at a time is the
default because it is what keeps two inputs that claim the same clip id apart within a run: the
second partition finds the first one's manifest and is refused, where two in flight at once would
each see a file no manifest owns yet and the later would replace it as a killed run's leftover.
More at once (`partitions_in_parallel`) pays off where that cannot happen (clip ids derived from the
source path, as NeMo derives them): a partition's fixed cost is a sequence of round trips that on S3
waits on latency, and locally one partition's reading overlaps another's writing (about 15% on W1,
docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clip_assets.artifact_writer import ArtifactWriter, WriteResult
from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.storage import Storage

# See the module's docstring for when more is safe; each partition in flight also holds its own read
# of the input (about 100 MB at the peak of inspection).
PARTITIONS_IN_PARALLEL = 1


@dataclass
class PartitionWork:
    """One partition's share of a family asset's output: how to build its artifacts, lazily.

    `build` inspects the input before its first artifact (raising on a bad file); it is not called at
    all when the writer finds the partition's outputs up to date.
    """

    partition_key: str
    source: str
    output_version: str
    build: Callable[[BuildReport], Iterable[Artifact]]
    # Metadata that needs the stream consumed (the preview thumbnail).
    describe: Callable[[BuildReport], dict[str, Any]] | None = None

    def artifacts(self, report: BuildReport) -> Iterator[Artifact]:
        """Defers `build` (and its input inspection) until the writer asks for the first artifact."""
        yield from self.build(report)


@dataclass
class PartitionOutcome:
    """A partition's write: its result, or the error that failed it alone."""

    work: PartitionWork
    report: BuildReport
    result: WriteResult | None = None
    error: Exception | None = None


def write_partitions(
    storage: Storage,
    family: str,
    works: Sequence[PartitionWork],
    max_workers: int,
    in_parallel: int = PARTITIONS_IN_PARALLEL,
) -> list[PartitionOutcome]:
    """Write every partition's artifacts; outcomes in the order of `works`, failures included."""
    writer = ArtifactWriter(storage, max_workers=max_workers)

    def write(work: PartitionWork) -> PartitionOutcome:
        outcome = PartitionOutcome(work, BuildReport())
        try:
            artifacts = work.artifacts(outcome.report)
            outcome.result = writer.write(family, work.partition_key, work.source, artifacts, work.output_version)
        except Exception as error:  # one partition's failure must not cost the others theirs
            outcome.error = error
        return outcome

    if in_parallel <= 1 or len(works) <= 1:
        return [write(work) for work in works]
    # Its own threads: a partition's writes wait on the shared writer pool, which must not be this one.
    with ThreadPoolExecutor(min(in_parallel, len(works)), thread_name_prefix=f"partitions-{family}") as pool:
        return list(pool.map(write, works))
