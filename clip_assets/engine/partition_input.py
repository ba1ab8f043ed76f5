"""A partition's input: finding its processed video, and inspecting all of it before a single artifact is written.

Inspection reads every column, probes every MP4 and parses every WebP, so a bad file fails its
partition with an error naming file, row and field, and nothing of that partition is written or
removed. The families then stream the columns they need, in one pass, from the same file version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.contract import ClipRecord, ProcessedVideoError, ProcessedVideoReader, VideoInfo
from clip_assets.contract.limits import ValidationLimits
from clip_assets.contract.partition_keys import decode_partition_key, encode_partition_key
from clip_assets.engine.claims import check_clip_ids, claim_video
from clip_assets.engine.inspection import VideoInspection, inspect_video
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import OutputFamily, clip_metadata
from clip_assets.families.base import VideoContext
from clip_assets.settings import WriterSettings
from clip_assets.storage import ObjectInfo, Storage, StorageError
from clip_assets.storage.keys import check_key


@dataclass(frozen=True)
class InboxFile:
    """A partition's processed-video file as it is now: where, and which version."""

    storage: Storage
    key: str
    info: ObjectInfo

    @property
    def name(self) -> str:
        """What errors call the file: its full path or URL."""
        return f"{self.storage.root}/{self.key}"


def find_inbox_file(storage: Storage, partition_key: str) -> InboxFile:
    """The file behind a partition key. A key added by hand that names no safe inbox path, or that is not
    the canonical key of its file (`a%2Emp4` for `a.mp4`, which would alias its outputs), is refused."""
    name = f"{storage.root}/{partition_key}"
    try:
        key = check_key(decode_partition_key(partition_key))
        if encode_partition_key(key) != partition_key:
            raise ValueError(f"not the canonical key of {key!r}, which is {encode_partition_key(key)!r}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProcessedVideoError(name, "<partition key>", str(exc)) from None
    try:
        info = storage.stat(key)
    except StorageError as exc:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", str(exc)) from None
    if info is None:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", "does not exist in the inbox")
    return InboxFile(storage, key, info)


@dataclass(frozen=True)
class PartitionInput:
    """A processed video that passed inspection and whose outputs are its own, and the means to stream it again."""

    file: InboxFile
    info: VideoInfo
    inspection: VideoInspection
    settings: WriterSettings
    footer: pq.FileMetaData

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def context(self) -> VideoContext:
        """What the families' builders know of the video before its first clip."""
        return VideoContext(self.info, self.settings, self.inspection.facts)

    def clips(self, columns: Iterable[str]) -> Iterator[ClipRecord]:
        """Stream clips lazily; refuses a file that changed since it was inspected."""
        current = self.file.storage.stat(self.file.key)
        if current is None or current.fingerprint != self.file.info.fingerprint:
            raise ProcessedVideoError(self.name, "<file>", "changed or vanished after validation; run again")
        with (
            self.file.storage.open(self.file.key) as handle,
            ProcessedVideoReader(handle, self.name, footer=self.footer) as reader,
        ):
            yield from reader.iter_clips(columns)


def inspect_input(
    file: InboxFile, limits: ValidationLimits, families: Sequence[OutputFamily], log: logging.Logger
) -> tuple[VideoInfo, VideoInspection, pq.FileMetaData]:
    """Every column of every clip checked, every MP4 probed and WebP parsed, every family's `check_clip` asked."""
    with file.storage.open(file.key) as handle, ProcessedVideoReader(handle, file.name, limits=limits) as reader:
        if reader.unknown_columns:
            log.warning(f"{file.name}: ignoring unknown columns {reader.unknown_columns}")
        info, inspection, footer = reader.info, inspect_video(reader, families), reader.footer
    log.info(
        f"{file.name}: valid, {inspection.num_clips} clips "
        f"({inspection.num_passed} passed, {inspection.num_filtered} filtered)"
    )
    return info, inspection, footer


def open_partition_input(
    file: InboxFile,
    partition_key: str,
    output: Storage,
    settings: WriterSettings,
    limits: ValidationLimits,
    families: Sequence[OutputFamily],
    log: logging.Logger,
) -> PartitionInput:
    """Inspect the file, then check that its output paths are its own (claims.py); raises before any write."""
    info, inspection, footer = inspect_input(file, limits, families, log)
    try:
        relative_video = layout.video_relative_path(info.source_video, settings.input_path)
    except layout.LayoutError as exc:
        raise ProcessedVideoError(file.name, "clip_assets.source_video", str(exc)) from None
    written = load_manifest(output, clip_metadata.FAMILY.name, partition_key)
    check_clip_ids(output, file.name, info, inspection, set(written.entries) if written else set())
    claim_video(output, partition_key, file.name, info, relative_video)  # last: a refused video claims nothing
    return PartitionInput(file, info, inspection, settings, footer)
