"""The output tree: NeMo Curator's ClipWriterStage layout, as pure functions of ids and settings.

This module is the only place that knows an output path. Every function returns a key relative to
the output root, '/'-separated, that cannot escape it: ids are canonical UUIDs, frame numbers are
integers, and the one piece of free text, the source video's path, goes through `video_relative_path`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import PurePosixPath

METAS_VERSION = "v0"
# Where clip-assets keeps its own bookkeeping, outside NeMo's tree ('_' sorts it apart and marks it
# as not part of the dataset for tools that skip such folders).
INTERNAL_PREFIX = "_clip_assets"

_KNOWN_EMBEDDING_PREFIXES = (("cosmos-embed1", "ce1"), ("internvideo2", "iv2"))
_UNSAFE_SEGMENTS = frozenset({"", ".", ".."})


class LayoutError(ValueError):
    """Input that would produce an output path outside the root, or an ambiguous one."""


def nemo_video_path(source_video: str) -> str:
    """The video path as NeMo spells it (`Path(input_video).as_posix()`) for local paths.

    URIs keep their `//`: NeMo would collapse `s3://b/k` to `s3:/b/k`, a bug clip-assets fixes.
    """
    if "://" in source_video:
        return source_video
    return PurePosixPath(source_video).as_posix()


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def video_relative_path(source_video: str, input_path: str) -> str:
    """`rel` of the reference layout: the video path without the `input_path` prefix.

    Unlike NeMo's string prefix, the prefix is matched by whole path segments, so `/data/videos2/x`
    is not under `/data/videos`. Unicode and spaces are kept; `..`, `.`, NUL, backslashes and control
    characters are refused because they could reach outside the output root or alias another path.
    """
    video = nemo_video_path(source_video)
    video_parts = _segments(video)
    prefix_parts = _segments(nemo_video_path(input_path)) if input_path else []
    if video_parts[: len(prefix_parts)] != prefix_parts:
        raise LayoutError(f"video path {source_video!r} is not under input_path {input_path!r}")
    rel_parts = video_parts[len(prefix_parts) :]
    if not rel_parts:
        raise LayoutError(f"video path {source_video!r} names the input_path itself, not a video below it")
    for part in rel_parts:
        if part in _UNSAFE_SEGMENTS or "\\" in part or any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise LayoutError(f"video path {source_video!r} has an unsafe path segment {part!r}")
    return "/".join(rel_parts)


def embedding_prefix(algorithm: str) -> str:
    """`ce1`/`iv2` for NeMo's algorithms; other algorithms get a slug of their name, never a NeMo prefix."""
    for name, prefix in _KNOWN_EMBEDDING_PREFIXES:
        if algorithm.startswith(name):
            return prefix
    slug = re.sub(r"[^a-z0-9]+", "_", algorithm.lower()).strip("_")
    if not slug:
        raise LayoutError(f"embedding algorithm {algorithm!r} has no usable name for a folder")
    return slug


def clip_key(clip_uuid: str, *, filtered: bool) -> str:
    return f"{'filtered_clips' if filtered else 'clips'}/{clip_uuid}.mp4"


def preview_prefix(clip_uuid: str) -> str:
    """The folder of one clip's previews."""
    return f"previews/{clip_uuid}/"


def preview_key(clip_uuid: str, start_frame: int, end_frame: int) -> str:
    return f"{preview_prefix(clip_uuid)}{int(start_frame)}_{int(end_frame)}.webp"


def clip_metadata_key(clip_uuid: str) -> str:
    return f"metas/{METAS_VERSION}/{clip_uuid}.json"


def embedding_pickle_key(algorithm: str, clip_uuid: str) -> str:
    return f"{embedding_prefix(algorithm)}_embd/{clip_uuid}.pickle"


def chunk_embedding_uuid(source_video: str, chunk_index: int) -> str:
    """NeMo's per-chunk Parquet name: `uuid5(NAMESPACE_URL, f"{input_video}_{chunk_index}")`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{nemo_video_path(source_video)}_{chunk_index}"))


def chunk_embedding_key(algorithm: str, source_video: str, chunk_index: int) -> str:
    return f"{embedding_prefix(algorithm)}_embd_parquet/{chunk_embedding_uuid(source_video, chunk_index)}.parquet"


def video_metadata_key(relative_video: str) -> str:
    return f"processed_videos/{relative_video}.json"


def chunk_stats_key(relative_video: str, chunk_index: int) -> str:
    return f"processed_clip_chunks/{relative_video}_{int(chunk_index)}.json"


def full_location(output_root: str, key: str) -> str:
    """The full path or URL of a key, as written into `clip_location`."""
    return f"{output_root.rstrip('/')}/{key}"


def check_key(key: str) -> str:
    """Refuse any key that is not a plain relative path below the root; returns it unchanged."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise LayoutError(f"unsafe output key {key!r}")
    if any(part in _UNSAFE_SEGMENTS for part in key.split("/")):
        raise LayoutError(f"unsafe output key {key!r}")
    return key


def manifest_prefix(family: str) -> str:
    return f"{INTERNAL_PREFIX}/manifests/{family}/"


def _partition_digest(partition_key: str) -> str:
    """Partition keys are free text of any length; file names are not, so they are named by a hash."""
    return hashlib.sha256(partition_key.encode("utf-8")).hexdigest()[:40]


def manifest_key(family: str, partition_key: str) -> str:
    return f"{manifest_prefix(family)}{_partition_digest(partition_key)}.json"


def lock_key(family: str, partition_key: str) -> str:
    """Held while one partition of one family is written, so two runs of it never interleave."""
    return f"{INTERNAL_PREFIX}/locks/{family}/{_partition_digest(partition_key)}.lock"


def dataset_summary_key() -> str:
    return f"{INTERNAL_PREFIX}/dataset_summary.json"
