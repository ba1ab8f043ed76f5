"""The output tree: NeMo Curator's ClipWriterStage layout, as pure functions of ids and settings.

This module is the only place that knows an output path. Every function returns a key relative to
the output root, '/'-separated, that cannot escape it: ids are canonical UUIDs, frame numbers are
integers, and the one piece of free text, the source video's path, goes through `video_relative_path`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from pathlib import PurePosixPath

METAS_VERSION = "v0"
# Where clip-assets keeps its own bookkeeping, outside NeMo's tree ('_' sorts it apart and marks it
# as not part of the dataset for tools that skip such folders).
INTERNAL_PREFIX = "_clip_assets"

_KNOWN_EMBEDDING_PREFIXES = (("cosmos-embed1", "ce1"), ("internvideo2", "iv2"))
# Other algorithms name their folder themselves, so the name must already be a plain folder name.
_ALGORITHM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# An embedding model's version (a dataset setting: NeMo's tree records none) names a table too; unlike a
# model name it may hold dots ("1.0"), so `<model>.<version>` is unambiguous.
_VERSION_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Path segments that name no file of their own: they would alias or escape a folder.
UNSAFE_SEGMENTS = frozenset({"", ".", ".."})
# File systems refuse longer names; the video's last segment gets `_<chunk>.json` appended.
MAX_SEGMENT_BYTES = 200

# NeMo's top-level folders, and clip-assets' own below INTERNAL_PREFIX.
CLIPS = "clips/"
FILTERED_CLIPS = "filtered_clips/"
PREVIEWS = "previews/"
CLIP_METADATA = f"metas/{METAS_VERSION}/"
VIDEO_METADATA = "processed_videos/"
CHUNK_STATS = "processed_clip_chunks/"
MANIFESTS = f"{INTERNAL_PREFIX}/manifests/"
STAGING = f"{INTERNAL_PREFIX}/staging/"
LOCKS = f"{INTERNAL_PREFIX}/locks/"
CLAIMS = f"{INTERNAL_PREFIX}/claims/"
# The curated dataset's derived outputs, rebuilt from the clip index: WebDataset shards and the gallery.
TRAINING_SHARDS = "training_shards/"
GALLERY = "gallery/"
CLIP_CLAIMS = f"{CLAIMS}clips/"
INTENTS = f"{INTERNAL_PREFIX}/intents/"
# One record per failed partition (Cosmos Curator keeps `video_errors/`), removed when it succeeds.
VIDEO_ERRORS = f"{INTERNAL_PREFIX}/video_errors/"
CHECKS = f"{INTERNAL_PREFIX}/checks/"


class LayoutError(ValueError):
    """Input that would produce an output path outside the root, or an ambiguous one."""


def nemo_video_path(source_video: str) -> str:
    """The video path as NeMo spells it (`Path(input_video).as_posix()`) for local paths.

    URIs keep their `//`: NeMo would collapse `s3://b/k` to `s3:/b/k`, a bug clip-assets fixes.
    """
    if "://" in source_video:
        return source_video
    return PurePosixPath(source_video).as_posix()


def _unsafe(segment: str) -> str | None:
    """Why a path segment taken from input data may not become part of an output path, or None."""
    if segment in UNSAFE_SEGMENTS:
        return "is empty, '.' or '..'"
    if "\\" in segment or any(unicodedata.category(ch) == "Cc" for ch in segment):
        return "holds a backslash or a control character"
    folded = unicodedata.normalize("NFKC", segment)
    if folded in UNSAFE_SEGMENTS or "/" in folded or "\\" in folded:
        return f"reads as {folded!r} once Unicode-normalized (NFKC)"
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return f"is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def _path_segments(path: str) -> list[str]:
    """A video path's segments after the root (`/`) or the URI's `scheme://`; refuses aliases.

    `/v//a.mp4`, `/v/./a.mp4` and `/v/a.mp4/` would name the same file as `/v/a.mp4` in the
    layout, so only the plain spelling is accepted: every spelling maps to its own output path.
    """
    scheme, separator, rest = path.partition("://")
    body = rest if separator else path.removeprefix("/")
    segments = body.split("/")
    if "" in segments or "." in segments:
        raise LayoutError(f"video path {path!r} is not in plain form (empty or '.' segments, or a trailing '/')")
    return [f"{scheme}:", *segments] if separator else segments


def video_relative_path(source_video: str, input_path: str) -> str:
    """`rel` of the reference layout: the video path without the `input_path` prefix.

    Unlike NeMo's string prefix, the prefix is matched by whole path segments, so `/data/videos2/x`
    is not under `/data/videos`. Unicode and spaces are kept; `..`, `.`, NUL, backslashes, control
    characters, segments that Unicode normalization turns into those (fullwidth dots, a two-dot
    leader) and over-long names are refused because they could reach outside the output root, alias
    another path, or not be writable. A folder segment may not end in `.json`: it could then be
    another video's output file (`a.mp4.json/b.mp4` under `a.mp4`).
    """
    video_parts = _path_segments(source_video)
    prefix_parts = _path_segments(input_path.rstrip("/")) if input_path.strip("/") else []
    if video_parts[: len(prefix_parts)] != prefix_parts:
        raise LayoutError(f"video path {source_video!r} is not under input_path {input_path!r}")
    rel_parts = video_parts[len(prefix_parts) :]
    if not rel_parts:
        raise LayoutError(f"video path {source_video!r} names the input_path itself, not a video below it")
    for position, part in enumerate(rel_parts):
        problem = _unsafe(part)
        if problem is None and position < len(rel_parts) - 1 and part.endswith(".json"):
            problem = "is a folder named like an output file (*.json)"
        if problem is not None:
            raise LayoutError(f"video path {source_video!r} has an unsafe path segment {part!r}: it {problem}")
    return "/".join(rel_parts)


def embedding_prefix(algorithm: str) -> str:
    """`ce1`/`iv2` for NeMo's algorithms; any other algorithm's folder is its own name, never a NeMo prefix.

    Names are used as they are (lowercase letters, digits, `-`, `_`), so two algorithms never share
    a folder and none is filed under a model it does not come from.
    """
    for name, prefix in _KNOWN_EMBEDDING_PREFIXES:
        if algorithm.startswith(name):
            return prefix
    if not _ALGORITHM_NAME.fullmatch(algorithm) or algorithm in {p for _, p in _KNOWN_EMBEDDING_PREFIXES}:
        raise LayoutError(
            f"embedding algorithm {algorithm!r} cannot name a folder: use lowercase letters, digits, '-' and '_' "
            "(up to 64), and not NeMo's own 'ce1'/'iv2'"
        )
    return algorithm


def _clip(clip_uuid: str) -> str:
    """Clip ids become file names: only the canonical lowercase UUID form is accepted."""
    if not _UUID.fullmatch(clip_uuid):
        raise LayoutError(f"clip id {clip_uuid!r} is not a canonical UUID")
    return clip_uuid


def clip_key(clip_uuid: str, *, filtered: bool) -> str:
    return f"{FILTERED_CLIPS if filtered else CLIPS}{_clip(clip_uuid)}.mp4"


def preview_prefix(clip_uuid: str) -> str:
    """The folder of one clip's previews."""
    return f"{PREVIEWS}{_clip(clip_uuid)}/"


def preview_key(clip_uuid: str, start_frame: int, end_frame: int) -> str:
    return f"{preview_prefix(clip_uuid)}{int(start_frame)}_{int(end_frame)}.webp"


def clip_metadata_key(clip_uuid: str) -> str:
    return f"{CLIP_METADATA}{_clip(clip_uuid)}.json"


def embedding_algorithm_of(key: str) -> str:
    """The algorithm an embedding file's folder stands for (`ce1_embd/` and `ce1_embd_parquet/` are
    Cosmos-Embed1's): what names a file's vectors when the file does not say it itself."""
    prefix = key.split("/", 1)[0].removesuffix("_embd_parquet").removesuffix("_embd")
    return dict((p, name) for name, p in _KNOWN_EMBEDDING_PREFIXES).get(prefix, prefix)


def embedding_pickles(algorithm: str) -> str:
    """The folder of one algorithm's per-clip pickles."""
    return f"{embedding_prefix(algorithm)}_embd/"


def embedding_parquets(algorithm: str) -> str:
    """The folder of one algorithm's per-chunk Parquet files."""
    return f"{embedding_prefix(algorithm)}_embd_parquet/"


def embedding_pickle_key(algorithm: str, clip_uuid: str) -> str:
    return f"{embedding_pickles(algorithm)}{_clip(clip_uuid)}.pickle"


def chunk_embedding_uuid(source_video: str, chunk_index: int) -> str:
    """NeMo's per-chunk Parquet name: `uuid5(NAMESPACE_URL, f"{input_video}_{chunk_index}")`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{nemo_video_path(source_video)}_{chunk_index}"))


def chunk_embedding_key(algorithm: str, source_video: str, chunk_index: int) -> str:
    return f"{embedding_parquets(algorithm)}{chunk_embedding_uuid(source_video, chunk_index)}.parquet"


def video_metadata_key(relative_video: str) -> str:
    return f"{VIDEO_METADATA}{relative_video}.json"


def chunk_stats_key(relative_video: str, chunk_index: int) -> str:
    return f"{CHUNK_STATS}{relative_video}_{int(chunk_index)}.json"


def full_location(output_root: str, key: str) -> str:
    """The full path or URL of a key, as written into `clip_location`."""
    return f"{output_root.rstrip('/')}/{key}"


def manifest_prefix(family: str) -> str:
    return f"{MANIFESTS}{family}/"


def _partition_digest(partition_key: str) -> str:
    """Partition keys are free text of any length; file names are not, so they are named by a hash."""
    return hashlib.sha256(partition_key.encode("utf-8")).hexdigest()[:40]


def manifest_key(family: str, partition_key: str) -> str:
    return f"{manifest_prefix(family)}{_partition_digest(partition_key)}.json"


def lock_key(partition_key: str) -> str:
    """Held while a partition's families are written, so two runs of it never interleave."""
    return f"{LOCKS}{_partition_digest(partition_key)}.lock"


def video_claim_key(relative_video: str) -> str:
    """Names the partition that writes one video's outputs, so a second processed video of the same
    source video is refused before it writes anything."""
    return f"{CLAIMS}{_partition_digest(relative_video)}.json"


# The folders each family writes into, kept when their last file goes (as are the root and the folders
# above them); the embedding folders (`{p}_embd/`) are top-level, which is kept anyway.
_FAMILY_FOLDERS = (
    CLIPS,
    FILTERED_CLIPS,
    PREVIEWS,
    CLIP_METADATA,
    VIDEO_METADATA,
    CHUNK_STATS,
    MANIFESTS,
    STAGING,
    LOCKS,
    CLAIMS,
    CLIP_CLAIMS,
    INTENTS,
    VIDEO_ERRORS,
)


def folders_emptied_by(key: str) -> list[str]:
    """The folders that go with `key` once it is removed and they are empty, deepest first: a clip's
    `previews/<uuid>/`, the subfolders of a video's path under `processed_videos/`. Never the root, a
    family's own folder or anything above one."""
    kept = max((folder for folder in _FAMILY_FOLDERS if key.startswith(folder)), key=len, default="")
    kept = kept or key.partition("/")[0] + "/"
    parts = key.split("/")[:-1]
    folders = ["/".join(parts[:depth]) + "/" for depth in range(len(parts), 0, -1)]
    return [folder for folder in folders if len(folder) > len(kept)]


def clip_claim_key(clip_uuid: str) -> str:
    """Names the partition that owns one clip id: created before any of the clip's files, atomically."""
    return f"{CLIP_CLAIMS}{_clip(clip_uuid)}.json"


def intent_key(partition_key: str) -> str:
    """A partition's intent record: the clip ids it holds claims on (and, while it writes, what it may write)."""
    return f"{INTENTS}{_partition_digest(partition_key)}.json"


def video_error_key(partition_key: str) -> str:
    """The record of why a partition failed, kept until it is written successfully."""
    return f"{VIDEO_ERRORS}{_partition_digest(partition_key)}.json"


def check_problems_key(family: str) -> str:
    """What a family's `intact` check found damaged and is not yet repaired: kept between checks, so a
    later check of other partitions does not forget it."""
    return f"{CHECKS}{_check_name(family)}.json"


def check_problems_lock_key(family: str) -> str:
    """Held while a check updates that record, so two checks never drop each other's findings."""
    return f"{LOCKS}checks-{_check_name(family)}.lock"


def _check_name(family: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,64}", family):
        raise LayoutError(f"family name {family!r} is not lowercase letters, digits and '_'")
    return family


def dataset_summary_key() -> str:
    return f"{INTERNAL_PREFIX}/dataset_summary.json"


# The curated dataset's derived tables (clip_assets.dataset), next to NeMo's tree: they are part of the
# dataset a curator opens, not bookkeeping.
DATASET = "dataset/"
CLIP_VECTORS = f"{DATASET}clip_vectors/"


def clip_index_key() -> str:
    """The clip index, a Lance dataset (a folder of fragments and versions): one row per clip."""
    return f"{DATASET}clip_index.lance"


def check_embedding_model(model: str, version: str) -> None:
    """An embedding model's name and version become a table's name: plain lowercase names only."""
    if not _ALGORITHM_NAME.fullmatch(model):
        raise LayoutError(
            f"embedding model {model!r} cannot name a vector table: use lowercase letters, digits, '-' and '_' "
            "(up to 64)"
        )
    if version and not _VERSION_NAME.fullmatch(version):
        raise LayoutError(
            f"embedding version {version!r} of {model} cannot name a vector table: use lowercase letters, digits, "
            "'.', '-' and '_' (up to 64), starting with a letter or digit"
        )


def clip_vectors_key(model: str, version: str = "") -> str:
    """One embedding model's vectors, a Lance dataset with a cosine vector index: `<model>.lance`, or
    `<model>.<version>.lance` for a versioned model (model names have no dot, so the two never collide)."""
    check_embedding_model(model, version)
    return f"{CLIP_VECTORS}{model}{'.' + version if version else ''}.lance"


def embedding_models_key() -> str:
    """Which embedding models have a vector table, their sizes, and the model the dataset is configured with."""
    return f"{DATASET}embedding_models.json"


def near_duplicates_key() -> str:
    """The near-duplicate decisions, a Parquet file: one row per clip compared (per group member for the
    transitive rule)."""
    return f"{DATASET}near_duplicates.parquet"


def near_duplicates_summary_key() -> str:
    """The last build's figures, settings and per-cluster fingerprints (what the next update compares
    with), and the duplicate rate the rate-jump check accepts."""
    return f"{DATASET}near_duplicates.json"


def near_duplicates_centroids_key() -> str:
    """The fitted k-means centroids (a .npy array, clusters x dim), re-used by every update until a re-fit."""
    return f"{DATASET}near_duplicates_centroids.npy"


def dataset_lock_key() -> str:
    """Held while the derived tables are updated, so two runs never commit over each other."""
    return f"{LOCKS}dataset_tables.lock"


def training_shard_key(name: str) -> str:
    """One WebDataset tar; `name` is the shard's hash-range name and content digest (clip_assets.dataset.shards)."""
    if not re.fullmatch(r"[0-9a-z-]{1,128}", name):
        raise LayoutError(f"training shard name {name!r} is not lowercase letters, digits and '-'")
    return f"{TRAINING_SHARDS}{name}.tar"


def training_shards_index_key() -> str:
    """Every shard's sample count, bytes, sha256 and member clip ids."""
    return f"{TRAINING_SHARDS}index.json"


def training_shards_lock_key() -> str:
    """Held while the shards are rebuilt, so two rebuilds never delete each other's new shards."""
    return f"{LOCKS}training_shards.lock"


def gallery_lock_key() -> str:
    """Held while the gallery is written, so two builds never delete each other's pages."""
    return f"{LOCKS}clip_gallery.lock"


def gallery_page_key() -> str:
    return f"{GALLERY}index.html"


def gallery_file_key(name: str) -> str:
    """The gallery's own files (script, filter index, page chunks) below its folder."""
    if not re.fullmatch(r"[0-9a-z_-]{1,64}\.(js|css)", name):
        raise LayoutError(f"gallery file name {name!r} is not a plain .js or .css name")
    return f"{GALLERY}{name}"


def relative_link(from_key: str, to_key: str) -> str:
    """The link from the file at `from_key` to the one at `to_key`, relative, so the tree can be opened from
    disk (file://) or served from any bucket prefix."""
    from_parts = from_key.split("/")[:-1]
    to_parts = to_key.split("/")
    common = 0
    while common < min(len(from_parts), len(to_parts) - 1) and from_parts[common] == to_parts[common]:
        common += 1
    return "/".join([".."] * (len(from_parts) - common) + to_parts[common:])
