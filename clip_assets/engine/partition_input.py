"""A partition's input: its processed video, inspected whole before a single artifact is written.

Inspection reads every column, probes every MP4 and parses every WebP, so a bad file fails its
partition with an error naming file, row and field, and nothing of that partition is written or
removed. A video delivered in chunks is inspected chunk file by chunk file, all of them before any
write, and its chunks must agree on the video's facts. The families then stream the columns they
need, in one pass, chunk by chunk in chunk order, from the same file versions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets import layout
from clip_assets.contract import ClipRecord, ProcessedVideoError, ProcessedVideoReader, VideoInfo
from clip_assets.contract.limits import ValidationLimits
from clip_assets.contract.partition_keys import parse_chunk_key
from clip_assets.contract.validation import VideoChecks, merge_chunk_infos
from clip_assets.engine.claims import check_clip_ids, claim_clips, claim_video, release_clips
from clip_assets.engine.inbox import InboxFile, VideoDelivery
from clip_assets.engine.inspection import VideoInspection, inspect_video, merge_inspections
from clip_assets.engine.intent import PartitionIntent, load_intent, planned_keys, remove_unrecorded, save_intent
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import OutputFamily, clip_metadata
from clip_assets.families.base import VideoContext
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage

# An input file up to this size is read once, whole: inspection and the writing pass share its bytes
# (one read instead of two streams; on S3 one GET), and what is written is exactly what was inspected.
# Larger files are streamed twice, so memory stays bounded by the reader's batches.
IN_MEMORY_INPUT_BYTES = 64 * 1024**2


def _source(file: InboxFile, contents: bytes | None) -> AbstractContextManager[BinaryIO | pa.BufferReader]:
    """The file's bytes when they were read whole, else a stream of it from its storage."""
    if contents is not None:
        return nullcontext(pa.BufferReader(contents))
    return file.storage.open(file.key)


@dataclass(frozen=True)
class PartitionInput:
    """A processed video that passed inspection and whose outputs are its own, and the means to stream it again."""

    delivery: VideoDelivery
    info: VideoInfo
    inspection: VideoInspection
    settings: WriterSettings
    footers: tuple[pq.FileMetaData, ...]
    # Per file, its bytes if it was read whole (IN_MEMORY_INPUT_BYTES), else None.
    contents: tuple[bytes | None, ...]
    partition_key: str = ""
    # Clip ids the partition held claims on before this run (its intent record): those the input no
    # longer has are released once the new version is written (`settle_intent`).
    held_clips: frozenset[str] = frozenset()
    # The intent record this run wrote before its first write.
    intent: PartitionIntent | None = None

    @property
    def name(self) -> str:
        return self.delivery.name

    @property
    def context(self) -> VideoContext:
        """What the families' builders know of the video before its first clip."""
        return VideoContext(self.info, self.settings, self.inspection.facts)

    def clips(self, columns: Iterable[str]) -> Iterator[ClipRecord]:
        """Stream clips lazily, chunk file by chunk file; refuses files that changed since inspection."""
        for file in self.delivery.files:
            current = file.storage.stat(file.key)
            if current is None or current.fingerprint != file.info.fingerprint:
                raise ProcessedVideoError(file.name, "<file>", "changed or vanished after validation; run again")
        checks = VideoChecks()
        for file, footer, contents in zip(self.delivery.files, self.footers, self.contents, strict=True):
            with (
                _source(file, contents) as handle,
                ProcessedVideoReader(handle, file.name, footer=footer) as reader,
            ):
                yield from reader.iter_clips(columns, checks)


def _inspect_file(
    file: InboxFile,
    limits: ValidationLimits,
    families: Sequence[OutputFamily],
    checks: VideoChecks,
    log: logging.Logger,
) -> tuple[VideoInfo, VideoInspection, pq.FileMetaData, bytes | None]:
    contents = file.storage.read(file.key) if file.info.size <= IN_MEMORY_INPUT_BYTES else None
    with _source(file, contents) as handle, ProcessedVideoReader(handle, file.name, limits=limits) as reader:
        if reader.unknown_columns:
            log.warning(f"{file.name}: ignoring unknown columns {reader.unknown_columns}")
        _check_name(file, reader.info)
        return reader.info, inspect_video(reader, families, checks), reader.footer, contents


def _check_name(file: InboxFile, info: VideoInfo) -> None:
    """A chunk file says which chunk of how many it is twice, in its name and in its metadata: they agree."""
    chunk = parse_chunk_key(file.key)
    if chunk is None and info.chunk_index is not None:
        raise ProcessedVideoError(
            file.name, "clip_assets.chunk_index", "a chunk file must be named <rel>.chunks/<index>-of-<count>.parquet"
        )
    if chunk is not None and (info.chunk_index, info.num_clip_chunks) != (chunk.index, chunk.count):
        raise ProcessedVideoError(
            file.name,
            "clip_assets.chunk_index",
            f"the file is named chunk {chunk.index} of {chunk.count}, its metadata says chunk "
            f"{info.chunk_index} of {info.num_clip_chunks}",
        )


@dataclass(frozen=True)
class InspectedInput:
    """What inspection of a delivery found: the video's facts, each file's footer and (when read whole) bytes."""

    delivery: VideoDelivery
    info: VideoInfo
    inspection: VideoInspection
    footers: tuple[pq.FileMetaData, ...]
    contents: tuple[bytes | None, ...]


def inspect_input(
    delivery: VideoDelivery, limits: ValidationLimits, families: Sequence[OutputFamily], log: logging.Logger
) -> InspectedInput:
    """Every column of every clip of every file checked, every MP4 probed and WebP parsed, every family's
    `check_clip` asked; a chunked video's files must agree on the video's facts."""
    checks = VideoChecks()
    inspected = [_inspect_file(file, limits, families, checks, log) for file in delivery.files]
    infos = [(file.name, info) for file, (info, _, _, _) in zip(delivery.files, inspected, strict=True)]
    info = merge_chunk_infos(infos) if delivery.chunked else inspected[0][0]
    inspection = merge_inspections([inspection for _, inspection, _, _ in inspected])
    log.info(
        f"{delivery.name}: valid, {inspection.num_clips} clips "
        f"({inspection.num_passed} passed, {inspection.num_filtered} filtered)"
        + (f" in {len(delivery.files)} chunk files" if delivery.chunked else "")
    )
    footers, contents = tuple(item[2] for item in inspected), tuple(item[3] for item in inspected)
    return InspectedInput(delivery, info, inspection, footers, contents)


def open_partition_input(
    delivery: VideoDelivery,
    partition_key: str,
    output: Storage,
    settings: WriterSettings,
    limits: ValidationLimits,
    families: Sequence[OutputFamily],
    log: logging.Logger,
    inspected: InspectedInput | None = None,
) -> PartitionInput:
    """Inspect the input (unless `inspected` is this delivery's inspection, read ahead), then make its output
    paths its own (claims.py); raises before any write.

    The intent record names every clip id about to be claimed and every key about to be written (with
    those a killed run may have left) before the claims are taken, so a run killed after claiming or
    mid-write leaves nothing the next run does not know to release or remove.
    """
    if inspected is None or inspected.delivery != delivery:
        inspected = inspect_input(delivery, limits, families, log)
    info, inspection, footers, contents = inspected.info, inspected.inspection, inspected.footers, inspected.contents
    try:
        relative_video = layout.video_relative_path(info.source_video, settings.input_path)
    except layout.LayoutError as exc:
        raise ProcessedVideoError(delivery.name, "clip_assets.source_video", str(exc)) from None
    intent = load_intent(output, partition_key)
    held = intent.clips if intent else frozenset()
    clips = frozenset(inspection.facts)
    leftover = intent.keys if intent else frozenset()
    planned = planned_keys(families, VideoContext(info, settings, inspection.facts))
    written_intent = PartitionIntent(partition_key, held | clips, leftover | planned)
    if written_intent != intent:
        save_intent(output, written_intent)
    try:
        claim_clips(output, partition_key, delivery.name, info, inspection, held)
        try:
            written = load_manifest(output, clip_metadata.FAMILY.name, partition_key)
            check_clip_ids(output, delivery.name, info, inspection, set(written.entries) if written else set())
            claim_video(output, partition_key, delivery.name, info, relative_video)
        except ProcessedVideoError:
            release_clips(output, partition_key, clips - held)
            raise
    except ProcessedVideoError:  # a refused video keeps no claim it took and leaves its record as it was
        if intent is None:
            output.delete(layout.intent_key(partition_key))
        elif written_intent != intent:
            save_intent(output, intent)
        raise
    return PartitionInput(delivery, info, inspection, settings, footers, contents, partition_key, held, written_intent)


def settle_intent(video: PartitionInput, output: Storage, recorded: Iterable[str]) -> list[str]:
    """Once every family of the partition is written: remove what the intent names but no manifest
    records (`recorded`: what a killed run left), release the claims of clips the input no longer has,
    and record that the partition holds exactly its clips' claims and nothing unrecorded. Returns the
    keys removed."""
    clips = frozenset(video.inspection.facts)
    removed = remove_unrecorded(output, video.intent, recorded) if video.intent else []
    release_clips(output, video.partition_key, video.held_clips - clips)
    save_intent(output, PartitionIntent(video.partition_key, clips))
    return removed
