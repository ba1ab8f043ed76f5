"""How one partition is written: the steps of docs/outputs.md, in order, in `write_partition`.

A problem with the input (missing, malformed, claiming another video's outputs), the lock or the
claims fails every family of the partition before anything is written; a problem writing one family
(a storage error, a conflict, a duplicate key) fails that family only, and the others are written.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from clip_assets import layout
from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.failures import record_failures
from clip_assets.engine.inbox import VideoDelivery, find_delivery
from clip_assets.engine.intent import load_intent
from clip_assets.engine.manifest import PartitionManifest
from clip_assets.engine.output_version import output_version
from clip_assets.engine.partition_input import (
    InspectedInput,
    PartitionInput,
    inspect_input,
    open_partition_input,
    settle_intent,
)
from clip_assets.engine.writer import ArtifactWriter, FamilyWrite, WriteResult
from clip_assets.families import FAMILIES, Artifact, BuildReport, OutputFamily
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage, StorageSpec


@dataclass(frozen=True)
class WriteJob:
    """What a run writes: which families, read from which inbox, written to which output, and how.

    `dataset_families` are every family of the dataset: each may refuse a clip (`check_clip`), so an
    input is good or bad for all of them, whichever `families` this run writes.
    """

    families: tuple[OutputFamily, ...]
    inbox: Storage
    output: Storage
    settings: WriterSettings
    limits: ValidationLimits
    dataset_families: tuple[OutputFamily, ...] = FAMILIES
    # Named in the failure records (Dagster's run id).
    run_id: str = ""
    # The storages as URL and options, for writers in other processes (the Ray backend); None: this one only.
    inbox_spec: StorageSpec | None = None
    output_spec: StorageSpec | None = None


@dataclass
class PartitionOutcome:
    """One partition's write: per family, its result or the error that failed it, and its build report."""

    partition_key: str
    source: str = ""
    # The input's fingerprint (size and ETag or mtime; every chunk's for a chunked video): what the
    # inbox sensor compares with to know the partition is already written from this very file.
    fingerprint: str = ""
    results: dict[str, WriteResult] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    reports: dict[str, BuildReport] = field(default_factory=dict)

    def report(self, family: OutputFamily) -> BuildReport:
        return self.reports.setdefault(family.name, BuildReport())

    def settle(self, family: OutputFamily, write: Callable[[], WriteResult]) -> None:
        """Run one family's write step; its failure is that family's alone."""
        try:
            self.results[family.name] = write()
        except Exception as error:  # one family's failure must not cost the others theirs
            self.errors[family.name] = error

    def fail_written(self, error: Exception) -> None:
        """Every family is written, but the partition's last step (settling its intent) failed: each fails,
        so that a retry runs, finds them unchanged and finishes that step. Reported as written, nothing
        would ever run it again, and a killed run's leftovers the record names would stay unremoved."""
        for name in self.results:
            self.errors[name] = error
        self.results.clear()

    def fail_unsettled(self, families: Sequence[OutputFamily], error: Exception) -> None:
        for family in families:
            if family.name not in self.results:
                self.errors.setdefault(family.name, error)


# Inputs smaller than this are read in their own turn, not ahead: their reading is too short to gain from
# overlapping, and a second thread wanting the interpreter slows the writing it would overlap (W2's
# 250 KB videos ran slower read ahead, W1's 42 MB ones faster; docs/performance.md).
READ_AHEAD_MIN_BYTES = 4 * 1024**2


@dataclass(frozen=True)
class LookAhead:
    """What `look_ahead` found of a partition before its turn: its input, its manifests as they were, and the
    input's inspection when some family will need writing."""

    delivery: VideoDelivery
    recorded: dict[str, PartitionManifest | None]
    inspected: InspectedInput | None


def look_ahead(job: WriteJob, partition_key: str, writer: ArtifactWriter, log: logging.Logger) -> LookAhead | None:
    """The reading half of a partition's write, done while the partition before it is written: the input found,
    the manifests read and, unless every one records this input's version already, the input inspected. None
    for a small input (`READ_AHEAD_MIN_BYTES`), left whole to its own turn. Nothing is written and no lock
    taken; the write re-checks all of it under its lock, and an input changed since is read again there."""
    delivery = find_delivery(job.inbox, partition_key)
    if sum(file.info.size for file in delivery.files) < READ_AHEAD_MIN_BYTES:
        return None
    version = output_version(delivery.fingerprint, job.settings)
    recorded = writer.load_manifests([family.name for family in job.families], partition_key)
    current = all(manifest is not None and manifest.output_version == version for manifest in recorded.values())
    inspected = None if current else inspect_input(delivery, job.limits, job.dataset_families, log)
    return LookAhead(delivery, recorded, inspected)


def write_partition(
    job: WriteJob,
    partition_key: str,
    writer: ArtifactWriter,
    log: logging.Logger,
    ahead: Future[LookAhead | None] | None = None,
) -> PartitionOutcome:
    """Write the job's families of one partition; never raises: failures are in the outcome, and in the
    partition's failure record (`clip_assets.engine.failures`), which a success clears. `ahead`: this
    partition's `look_ahead`, started earlier; if it failed, its steps are done again here (and fail here,
    if the failure is real)."""
    outcome = _write(job, partition_key, writer, log, _found(ahead))
    if all(result.unchanged_input for result in outcome.results.values()) and not outcome.errors:
        return outcome  # up to date: written successfully before, so nothing is recorded as failed
    try:
        families = [family.name for family in job.families]
        record_failures(job.output, partition_key, outcome.source, outcome.errors, families, job.run_id)
    except (OSError, ValueError) as exc:  # the outcome itself is what the run reports
        log.warning(f"{partition_key}: its failure record could not be updated: {exc}")
    return outcome


def _found(ahead: Future[LookAhead | None] | None) -> LookAhead | None:
    if ahead is None:
        return None
    try:
        return ahead.result()
    except Exception:  # read again, in the partition's own turn: a real problem fails it there, named
        return None


def _write(
    job: WriteJob, partition_key: str, writer: ArtifactWriter, log: logging.Logger, found: LookAhead | None
) -> PartitionOutcome:
    outcome = PartitionOutcome(partition_key, source=f"{job.inbox.root}/{partition_key}")
    try:
        # One file, or every chunk file of the video.
        delivery = found.delivery if found is not None else find_delivery(job.inbox, partition_key)
        outcome.source, outcome.fingerprint = delivery.name, delivery.fingerprint
        version = output_version(delivery.fingerprint, job.settings)
        # 0. Unchanged? Then verify, don't read (and take no lock).
        if found is not None:
            recorded = found.recorded
        else:
            recorded = writer.load_manifests([family.name for family in job.families], partition_key)
        pending = _changed(job.families, recorded, version, writer, outcome)
        if pending and found is not None and find_delivery(job.inbox, partition_key) != delivery:
            return _write(job, partition_key, writer, log, None)  # changed since it was read ahead: read anew
        # Every manifest current, but the intent still names keys: a run died after its last manifest and
        # before settling (its lease is still there too). Written again (nothing is rewritten) to settle.
        unsettled = False
        if not pending:
            intent = load_intent(job.output, partition_key)
            if intent is None or not intent.keys:
                return outcome
            unsettled, pending = True, list(job.families)
            outcome.results.clear()
        writer.sweep_abandoned()
        # 1. Lock the partition: two runs of it never interleave.
        with job.output.lock(layout.lock_key(partition_key), writer.lock_timeout_s) as lease:
            recorded = writer.load_manifests([family.name for family in pending], partition_key)
            if not unsettled:
                pending = _changed(pending, recorded, version, writer, outcome)  # another run may just have written
                if not pending:
                    return outcome
            # 2. Inspect all of the input, then check that its outputs are its own.
            inspected = found.inspected if found is not None else None
            video = open_partition_input(
                delivery, partition_key, job.output, job.settings, job.limits, job.dataset_families, log, inspected
            )
            # 3-4. Build every family's artifacts in one pass over the input, writing them as they come.
            writes = {
                f.name: writer.begin(recorded[f.name], f.name, partition_key, delivery.name, version) for f in pending
            }
            _build_and_write(video, pending, writes, outcome)
            # 5-6. Remove what each family no longer produces, then record its manifest.
            for family in pending:
                if family.name not in outcome.errors:
                    outcome.settle(family, functools.partial(writes[family.name].finish, lease))
            # 7. Every family written: what a killed run left unrecorded goes, and the claims of clips
            # the input no longer has.
            if not any(family.name in outcome.errors for family in job.families):
                try:
                    lease.check()
                    # A family read under this lock (then written, or found unchanged) is what its result
                    # holds; any other may have been written by another run since it was read unlocked.
                    manifests = [
                        outcome.results[family.name].manifest
                        if family.name in recorded
                        else writer.load_manifest(family.name, partition_key)
                        for family in job.dataset_families
                    ]
                    recorded_keys = {key for manifest in manifests if manifest is not None for key in manifest.entries}
                    removed = settle_intent(video, job.output, recorded_keys)
                except Exception as exc:  # written, but the record still names keys: a retry settles it
                    outcome.fail_written(exc)
                else:
                    if removed:
                        log.info(f"{partition_key}: removed {len(removed)} files a killed run left unrecorded")
    except Exception as error:  # the input, the lock, the claims or the stream: every family not done fails
        outcome.fail_unsettled(job.families, error)
    return outcome


def _changed(
    families: Sequence[OutputFamily],
    recorded: dict[str, PartitionManifest | None],
    version: str,
    writer: ArtifactWriter,
    outcome: PartitionOutcome,
) -> list[OutputFamily]:
    """The families whose outputs are not already what this version would write; the others are settled."""
    pending = []
    for family in families:
        unchanged = writer.unchanged(recorded[family.name], version)
        if unchanged is None:
            pending.append(family)
        else:
            outcome.results[family.name] = unchanged
    return pending


def _build_and_write(
    video: PartitionInput, families: Sequence[OutputFamily], writes: dict[str, FamilyWrite], outcome: PartitionOutcome
) -> None:
    """One stream of the columns the families read, each clip handed to every family's builder.

    A family whose builder or write fails stops being fed (what it wrote is recorded); the stream
    itself failing (the file changed since inspection) stops them all.
    """
    builders = {family.name: family.builder(video.context, outcome.report(family)) for family in families}
    live = list(families)

    def feed(family: OutputFamily, step: Callable[[], Iterable[Artifact]]) -> None:
        write = writes[family.name]
        try:
            for artifact in step():
                write.add(artifact)
        except Exception as error:
            write.abandon(error)
            outcome.errors[family.name] = error
            live.remove(family)

    try:
        for clip in video.clips(frozenset().union(*(family.columns for family in families))):
            for family in list(live):
                feed(family, functools.partial(builders[family.name].add, clip))
        for family in list(live):
            feed(family, builders[family.name].finish)
    except BaseException as failure:
        for family in live:
            writes[family.name].abandon(failure)
        raise
