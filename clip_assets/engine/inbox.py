"""A video's input in the inbox: one processed-video file, or the chunk files of a video delivered in chunks.

Discovery (which lists the inbox) and the partition input (which opens one partition's files) both go
through here, so they agree on when a chunked video is complete and on its fingerprint: a video
delivered in `count` chunks is complete once `<rel>.chunks/0-of-count.parquet` ...
`<rel>.chunks/(count-1)-of-count.parquet` are all there and nothing else is in its folder; its
fingerprint combines the chunks' own, so a re-sent chunk changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from clip_assets.contract import ProcessedVideoError
from clip_assets.contract.partition_keys import (
    SUFFIX,
    chunk_folder,
    chunk_folder_video,
    chunk_key,
    decode_partition_key,
    encode_partition_key,
    parse_chunk_key,
)
from clip_assets.storage import ObjectInfo, Storage, StorageError
from clip_assets.storage.keys import check_key

CHUNKS_FIELD = "<chunk files>"


def is_candidate(key: str) -> bool:
    """A `.parquet` file that is not hidden or internal (producers' temp files start with '.')."""
    return key.endswith(SUFFIX) and not any(part.startswith((".", "_")) for part in key.split("/"))


@dataclass(frozen=True)
class InboxFile:
    """One processed-video file (or chunk file) as it is now: where, and which version."""

    storage: Storage
    key: str
    info: ObjectInfo

    @property
    def name(self) -> str:
        """What errors call the file: its full path or URL."""
        return f"{self.storage.root}/{self.key}"


def inbox_key(storage: Storage, partition_key: str) -> str:
    """The single-file key a partition key names. A key added by hand that names no safe inbox path, or
    that is not the canonical key of its file (`a%2Emp4` for `a.mp4`, which would alias its outputs), is
    refused."""
    try:
        key = check_key(decode_partition_key(partition_key))
        if encode_partition_key(key) != partition_key:
            raise ValueError(f"not the canonical key of {key!r}, which is {encode_partition_key(key)!r}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProcessedVideoError(f"{storage.root}/{partition_key}", "<partition key>", str(exc)) from None
    return key


def find_inbox_file(storage: Storage, partition_key: str) -> InboxFile:
    """The single file behind a partition key; refuses a key that names none (see `inbox_key`)."""
    key = inbox_key(storage, partition_key)
    info = _stat(storage, key)
    if info is None:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", "does not exist in the inbox")
    return InboxFile(storage, key, info)


def _stat(storage: Storage, key: str) -> ObjectInfo | None:
    try:
        return storage.stat(key)
    except StorageError as exc:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", str(exc)) from None


def chunked_fingerprint(chunks: Sequence[ObjectInfo]) -> str:
    """One fingerprint for all of a video's chunk files: any chunk re-sent (or changed) changes it."""
    lines = "\n".join(f"{info.key}\0{info.fingerprint}" for info in sorted(chunks, key=lambda i: i.key))
    return f"chunks:{hashlib.sha256(lines.encode()).hexdigest()[:32]}"


@dataclass
class ChunkSet:
    """The files found in one video's chunk folder, by chunk index and count, and those misnamed."""

    video_key: str
    found: dict[tuple[int, int], ObjectInfo] = field(default_factory=dict)
    misnamed: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return chunk_folder(self.video_key)

    def add(self, info: ObjectInfo) -> None:
        chunk = parse_chunk_key(info.key)
        if chunk is None:
            self.misnamed.append(info.key)
        else:
            self.found[(chunk.index, chunk.count)] = info

    def problem(self) -> str | None:
        """Why the set is not (yet) one complete video, or None when it is."""
        if self.misnamed:
            return f"{self.misnamed[0]} is not named <index>-of-<count>.parquet; only chunk files go in {self.folder}"
        counts = sorted({count for _, count in self.found})
        if len(counts) > 1:
            one, other = (self.found[min(key for key in self.found if key[1] == c)].key for c in counts[:2])
            return f"chunk files of {len(counts)} different deliveries, e.g. {one} and {other}: remove the stale one"
        count = counts[0] if counts else 0
        if len(self.found) < count:  # the first gap is at most len(found) in: no walk over a huge count
            first = next(i for i in range(count) if (i, count) not in self.found)
            return f"{len(self.found)} of {count} chunks; waiting for {chunk_key(self.video_key, first, count)}"
        return None

    def in_order(self) -> list[ObjectInfo]:
        return [self.found[key] for key in sorted(self.found)]


class InboxListing:
    """One pass over an inbox listing: single files handed on as they come, chunk files gathered by video.

    Only chunk files are held (a chunked video is judged once all of its files are seen); single files
    stream, so a listing of a million of them costs no million objects.
    """

    def __init__(self) -> None:
        self.chunk_sets: dict[str, ChunkSet] = {}

    def singles(self, infos: Iterable[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in infos:
            if not is_candidate(info.key):
                continue
            video_key = chunk_folder_video(info.key)
            if video_key is None:
                yield info
            else:
                self.chunk_sets.setdefault(video_key, ChunkSet(video_key)).add(info)


def both_forms(video_key: str) -> str:
    return f"the video arrives both as {video_key} and as chunk files in {chunk_folder(video_key)}; remove one"


@dataclass(frozen=True)
class VideoDelivery:
    """What one partition reads: a single file, or every chunk file of a chunked video in chunk order."""

    storage: Storage
    video_key: str
    files: tuple[InboxFile, ...]
    chunked: bool

    @property
    def name(self) -> str:
        """What errors and manifests call the input: the file, or the chunk folder."""
        if not self.chunked:
            return self.files[0].name
        return f"{self.storage.root}/{chunk_folder(self.video_key)}".rstrip("/")

    @property
    def fingerprint(self) -> str:
        if not self.chunked:
            return self.files[0].info.fingerprint
        return chunked_fingerprint([file.info for file in self.files])


def find_delivery(storage: Storage, partition_key: str) -> VideoDelivery:
    """The partition's input as it is now; refuses a video that is incomplete, ambiguous or missing."""
    key = inbox_key(storage, partition_key)
    single = _stat(storage, key)
    found = ChunkSet(key)
    try:
        for info in storage.list(chunk_folder(key)):
            if is_candidate(info.key) and chunk_folder_video(info.key) == key:
                found.add(info)
    except StorageError as exc:
        raise ProcessedVideoError(f"{storage.root}/{chunk_folder(key)}", CHUNKS_FIELD, str(exc)) from None
    chunks = found if found.found or found.misnamed else None
    if single is not None and chunks is not None:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", both_forms(key))
    if single is not None:
        return VideoDelivery(storage, key, (InboxFile(storage, key, single),), chunked=False)
    if chunks is None:
        raise ProcessedVideoError(f"{storage.root}/{key}", "<file>", "does not exist in the inbox")
    problem = chunks.problem()
    if problem is not None:
        raise ProcessedVideoError(f"{storage.root}/{chunks.folder}".rstrip("/"), CHUNKS_FIELD, problem)
    files = tuple(InboxFile(storage, info.key, info) for info in chunks.in_order())
    return VideoDelivery(storage, key, files, chunked=True)
