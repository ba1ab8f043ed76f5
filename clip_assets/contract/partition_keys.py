"""Inbox names: where a processed video's file (or its chunk files) sits, and its Dagster partition key.

A video arrives either as one file, `<rel>.parquet`, or as chunk files written independently,
`<rel>.chunks/<index>-of-<count>.parquet`; either way its partition key is `<rel>` made acceptable to
Dagster. Dagster refuses keys containing `...` or control characters. Such characters are
percent-encoded, and `%` itself always is, so the mapping is reversible and two videos never share a
key. A folder whose name ends in `.chunks` holds chunk files and nothing else: a file in it that is
not named `<index>-of-<count>.parquet` (decimal, no leading zeros, index below count) is no video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SUFFIX = ".parquet"
CHUNKS_SUFFIX = ".chunks"
_DOT_RUN = re.compile(r"\.{3,}")
_CHUNK_NAME = re.compile(r"(0|[1-9][0-9]{0,8})-of-([1-9][0-9]{0,8})\.parquet")


def _encode_char(ch: str) -> str:
    if ch == "%" or ord(ch) < 32 or ord(ch) == 127:
        return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
    return ch


def encode_partition_key(relative_path: str) -> str:
    """`cam1/2024/street walk.mp4.parquet` -> `cam1/2024/street walk.mp4`."""
    if not relative_path.endswith(SUFFIX):
        raise ValueError(f"{relative_path!r} is not a {SUFFIX} file")
    stem = relative_path[: -len(SUFFIX)]
    encoded = "".join(_encode_char(ch) for ch in stem)
    return _DOT_RUN.sub(lambda m: "%2E" * len(m.group()), encoded)


def decode_partition_key(partition_key: str) -> str:
    """The inbox-relative path of the single file behind a partition key."""
    return unquote(partition_key, errors="strict") + SUFFIX


@dataclass(frozen=True)
class ChunkName:
    """What a chunk file's inbox key says: which video (its single-file key), which chunk of how many."""

    video_key: str
    index: int
    count: int


def chunk_folder(video_key: str) -> str:
    """`cam1/a.mp4.parquet` -> `cam1/a.mp4.chunks/`: where that video's chunk files go."""
    if not video_key.endswith(SUFFIX):
        raise ValueError(f"{video_key!r} is not a {SUFFIX} file")
    return f"{video_key[: -len(SUFFIX)]}{CHUNKS_SUFFIX}/"


def chunk_key(video_key: str, index: int, count: int) -> str:
    """`cam1/a.mp4.parquet`, 1, 3 -> `cam1/a.mp4.chunks/1-of-3.parquet`."""
    if not 0 <= index < count:
        raise ValueError(f"chunk {index} of {count} does not exist")
    return f"{chunk_folder(video_key)}{index}-of-{count}{SUFFIX}"


def chunk_folder_video(key: str) -> str | None:
    """For a key directly inside a `*.chunks` folder (a chunk file, or a misnamed one), the single-file
    key of the video it belongs to (`a.mp4.chunks/0-of-2.parquet` -> `a.mp4.parquet`); else None."""
    folder = key.rpartition("/")[0]
    segment = folder.rpartition("/")[2]
    if not segment.endswith(CHUNKS_SUFFIX) or len(segment) == len(CHUNKS_SUFFIX):
        return None
    return folder[: -len(CHUNKS_SUFFIX)] + SUFFIX


def parse_chunk_key(key: str) -> ChunkName | None:
    """The chunk a key names, or None when it is not exactly a chunk file's name."""
    video_key = chunk_folder_video(key)
    match = _CHUNK_NAME.fullmatch(key.rpartition("/")[2])
    if video_key is None or match is None:
        return None
    index, count = int(match.group(1)), int(match.group(2))
    if index >= count:
        return None
    return ChunkName(video_key, index, count)
