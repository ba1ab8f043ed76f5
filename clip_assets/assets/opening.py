"""Finding a partition's processed video and inspecting all of it before a single artifact is written.

Inspection reads every column, probes every MP4 and parses every WebP, so a bad file fails its
partition with an error naming file, row and field, and nothing of that partition is written or
removed. Each family then streams only the columns it needs, from the same file version.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.artifact_writer import ArtifactWriter
from clip_assets.claims import check_clip_ids, claim_video
from clip_assets.contract import ClipRecord, ProcessedVideoError, ProcessedVideoReader, VideoInfo
from clip_assets.contract.limits import ValidationLimits
from clip_assets.inspection import VideoInspection, inspect_video
from clip_assets.partition_keys import decode_partition_key, encode_partition_key
from clip_assets.settings import WriterSettings
from clip_assets.storage import ObjectInfo, Storage, StorageError


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
        key = layout.check_key(decode_partition_key(partition_key))
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
class ValidatedVideo:
    """A processed video that passed inspection, and the means to stream it again."""

    file: InboxFile
    info: VideoInfo
    inspection: VideoInspection
    settings: WriterSettings
    footer: pq.FileMetaData

    @property
    def name(self) -> str:
        return self.file.name

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


# File versions already inspected in this process, so the five family assets of one run read a file's
# heavy columns once for inspection, not five times. Keyed by the file's fingerprint (size and mtime,
# or ETag) and the limits: a rewritten file is a new key and is inspected again.
_INSPECTED: OrderedDict[tuple[str, str, ValidationLimits], tuple[VideoInfo, VideoInspection, pq.FileMetaData]] = (
    OrderedDict()
)
_INSPECTED_MAX = 256
# Partitions of a run may be written a few at a time (batch_writer.py): the caches are shared.
_CACHES = threading.Lock()


def _inspect(
    file: InboxFile, limits: ValidationLimits, log: logging.Logger
) -> tuple[VideoInfo, VideoInspection, pq.FileMetaData]:
    cache_key = (file.name, file.info.fingerprint, limits)
    with _CACHES:
        if cache_key in _INSPECTED:
            _INSPECTED.move_to_end(cache_key)
            return _INSPECTED[cache_key]
    with file.storage.open(file.key) as handle, ProcessedVideoReader(handle, file.name, limits=limits) as reader:
        if reader.unknown_columns:
            log.warning(f"{file.name}: ignoring unknown columns {reader.unknown_columns}")
        result = (reader.info, inspect_video(reader), reader.footer)
    inspection = result[1]
    log.info(
        f"{file.name}: valid, {inspection.num_clips} clips "
        f"({inspection.num_passed} passed, {inspection.num_filtered} filtered)"
    )
    with _CACHES:
        _INSPECTED[cache_key] = result
        if len(_INSPECTED) > _INSPECTED_MAX:
            _INSPECTED.popitem(last=False)
    return result


# Partitions whose outputs were checked to be their own in this process (claims.py), by file version.
_CLAIMED: OrderedDict[tuple[str, str, str], None] = OrderedDict()


def open_validated_video(
    file: InboxFile,
    partition_key: str,
    output: Storage,
    settings: WriterSettings,
    limits: ValidationLimits,
    log: logging.Logger,
) -> ValidatedVideo:
    """Inspect the file (once per version per process), then check its output paths are its own."""
    info, inspection, footer = _inspect(file, limits, log)
    try:
        relative_video = layout.video_relative_path(info.source_video, settings.input_path)
    except layout.LayoutError as exc:
        raise ProcessedVideoError(file.name, "clip_assets.source_video", str(exc)) from None
    claimed = (partition_key, file.info.fingerprint, output.root)
    with _CACHES:
        known = claimed in _CLAIMED
    if not known:
        written = ArtifactWriter(output).load_manifest("clip_metadata", partition_key)
        check_clip_ids(output, file.name, info, inspection, set(written.entries) if written else set())
        claim_video(output, partition_key, file.name, info, relative_video)  # last: a refused video claims nothing
        with _CACHES:
            _CLAIMED[claimed] = None
            if len(_CLAIMED) > _INSPECTED_MAX:
                _CLAIMED.popitem(last=False)
    return ValidatedVideo(file, info, inspection, settings, footer)
