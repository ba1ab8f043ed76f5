"""Pure checks of the processed-video contract: file metadata, column types and one clip at a time.

Every failure is a ProcessedVideoError naming file, field and (for clip data) row and clip id.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from clip_assets.contract import schema
from clip_assets.contract.errors import ProcessedVideoError
from clip_assets.contract.limits import ValidationLimits
from clip_assets.contract.records import ChunkCounters, ClipRecord, EmbeddingLayout, VideoInfo

_INT_VIDEO_FIELDS = ("width", "height", "num_frames")
_FLOAT_VIDEO_FIELDS = ("framerate", "duration")
_STR_VIDEO_FIELDS = ("video_codec", "pixel_format", "audio_codec")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    """An int, or a float with no fraction (JSON writers in other languages turn 1920 into 1920.0)."""
    return _is_int(value) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (only Python writes it)")


def load_json(text: str | bytes, *, allow_nan: bool = False) -> Any:
    """JSON whose nesting, however deep, is an error and not a crash. NaN and Infinity (Python's
    extension) are refused unless `allow_nan`: for values that are checked one by one later."""
    try:
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_file_metadata(file: str, raw: bytes | None) -> VideoInfo:
    """Parse and check the `clip_assets` schema-metadata object."""
    field = schema.METADATA_KEY.decode()
    if raw is None:
        raise ProcessedVideoError(file, field, "schema metadata key 'clip_assets' is missing")
    try:
        doc = load_json(raw.decode("utf-8"), allow_nan=True)  # each number is checked to be finite below
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProcessedVideoError(file, field, f"not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ProcessedVideoError(file, field, "must be a JSON object")
    version = doc.get("format_version")
    if not _is_int(version) or version not in schema.FORMAT_VERSIONS:
        known = ", ".join(map(str, schema.FORMAT_VERSIONS))
        raise ProcessedVideoError(
            file, f"{field}.format_version", f"unsupported format_version {version!r}; this reader knows {known}"
        )
    if version < 2:
        for key in (schema.CHUNK_INDEX_KEY, schema.EMBEDDING_LAYOUTS_KEY):
            if key in doc:
                raise ProcessedVideoError(file, f"{field}.{key}", "needs format_version 2")
    source_video = doc.get("source_video")
    if not isinstance(source_video, str) or not source_video or "\x00" in source_video:
        raise ProcessedVideoError(file, f"{field}.source_video", "must be a non-empty string without NUL")
    video = doc.get("video", {})
    if not isinstance(video, dict):
        raise ProcessedVideoError(file, f"{field}.video", "must be a JSON object")
    values: dict[str, Any] = {}
    for name in schema.VIDEO_FIELDS:
        value = video.get(name)
        path = f"{field}.video.{name}"
        if value is None:
            values[name] = None
        elif name in _INT_VIDEO_FIELDS and (not _is_whole(value) or value < 0):
            raise ProcessedVideoError(file, path, f"must be a non-negative integer or null, got {value!r}")
        elif name in _FLOAT_VIDEO_FIELDS and (not _is_number(value) or value < 0):
            raise ProcessedVideoError(file, path, f"must be a finite non-negative number or null, got {value!r}")
        elif name in _STR_VIDEO_FIELDS and not isinstance(value, str):
            raise ProcessedVideoError(file, path, f"must be a string or null, got {value!r}")
        else:
            values[name] = (
                float(value) if name in _FLOAT_VIDEO_FIELDS else int(value) if name in _INT_VIDEO_FIELDS else value
            )
    for name in ("num_total_clips", "num_clip_chunks"):
        value = doc.get(name, 0)
        if not _is_int(value) or value < 0:
            raise ProcessedVideoError(file, f"{field}.{name}", f"must be a non-negative integer, got {value!r}")
        values[name] = value
    chunk_index = _parse_chunk_index(file, doc, values["num_clip_chunks"])
    chunks = _parse_chunks(file, doc)
    if chunk_index is not None and any(c.index != chunk_index for c in chunks or ()):
        raise ProcessedVideoError(
            file, f"{field}.chunks", f"a chunk file (chunk {chunk_index}) may only give its own chunk's counters"
        )
    return VideoInfo(
        source_video=source_video,
        **values,
        chunks=chunks,
        chunk_index=chunk_index,
        embedding_layouts=_parse_embedding_layouts(file, doc),
    )


def merge_chunk_infos(named: Sequence[tuple[str, VideoInfo]]) -> VideoInfo:
    """The video of chunk files `(file name, its metadata)`, in chunk order: they must agree on every
    video-level fact (a disagreement names both files and the field); each gives its own chunk's counters.

    Embedding layouts are merged: a chunk whose clips have no vector of an algorithm need not declare it.
    """
    first_file, first = named[0]
    field = schema.METADATA_KEY.decode()
    layouts = dict(first.embedding_layouts)
    declared_in = dict.fromkeys(layouts, first_file)
    facts = ("source_video", *(f"video.{n}" for n in schema.VIDEO_FIELDS), "num_total_clips", "num_clip_chunks")
    for file, info in named[1:]:
        for name in facts:
            attribute = name.removeprefix("video.")
            mine, theirs = getattr(info, attribute), getattr(first, attribute)
            if mine != theirs:
                problem = f"{mine!r} here but {theirs!r} in {first_file}: chunks of a video must agree"
                raise ProcessedVideoError(file, f"{field}.{name}", problem)
        if (info.chunks is None) != (first.chunks is None):
            problem = f"given in only one of this file and {first_file}: give it in every chunk or none"
            raise ProcessedVideoError(file, f"{field}.chunks", problem)
        for algorithm, layout in info.embedding_layouts.items():
            declared_in.setdefault(algorithm, file)
            if layouts.setdefault(algorithm, layout) != layout:
                problem = f"{layout} here but {layouts[algorithm]} in {declared_in[algorithm]}: chunks must agree"
                raise ProcessedVideoError(file, f"{field}.{schema.EMBEDDING_LAYOUTS_KEY}[{_shown(algorithm)}]", problem)
    chunks = None if first.chunks is None else tuple(c for _, info in named for c in info.chunks or ())
    return dataclasses.replace(first, chunks=chunks, chunk_index=None, embedding_layouts=layouts)


def _parse_chunk_index(file: str, doc: Mapping[str, Any], num_clip_chunks: int) -> int | None:
    """A chunk file's own chunk: below `num_clip_chunks`, which a chunked video must set."""
    value = doc.get(schema.CHUNK_INDEX_KEY)
    if value is None:
        return None
    path = f"{schema.METADATA_KEY.decode()}.{schema.CHUNK_INDEX_KEY}"
    if not _is_int(value) or value < 0:
        raise ProcessedVideoError(file, path, f"must be a non-negative integer, got {value!r}")
    if value >= num_clip_chunks:
        raise ProcessedVideoError(file, path, f"{value} is not below num_clip_chunks {num_clip_chunks}")
    return int(value)


def _parse_embedding_layouts(file: str, doc: Mapping[str, Any]) -> dict[str, EmbeddingLayout]:
    """`{algorithm: {"dtype": "float16", "shape": [1, 768]}}`: what each algorithm's flat vectors become."""
    layouts = doc.get(schema.EMBEDDING_LAYOUTS_KEY)
    path = f"{schema.METADATA_KEY.decode()}.{schema.EMBEDDING_LAYOUTS_KEY}"
    if layouts is None:
        return {}
    if not isinstance(layouts, dict):
        raise ProcessedVideoError(file, path, "must be a JSON object")
    parsed: dict[str, EmbeddingLayout] = {}
    for algorithm, layout in layouts.items():
        where = f"{path}[{_shown(algorithm)}]"
        if not isinstance(layout, dict):
            raise ProcessedVideoError(file, where, "must be a JSON object")
        dtype, shape = layout.get("dtype"), layout.get("shape")
        if dtype not in schema.EMBEDDING_DTYPES:
            raise ProcessedVideoError(file, f"{where}.dtype", f"must be one of {list(schema.EMBEDDING_DTYPES)}")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 8
            or not all(_is_int(n) and n > 0 for n in shape)
            or math.prod(shape) > 2**31
        ):
            raise ProcessedVideoError(file, f"{where}.shape", f"must be 1 to 8 positive dimensions, got {shape!r}")
        parsed[algorithm] = EmbeddingLayout(dtype, tuple(shape))
    return parsed


def _parse_chunks(file: str, doc: Mapping[str, Any]) -> tuple[ChunkCounters, ...] | None:
    if "chunks" not in doc or doc["chunks"] is None:
        return None
    chunks = doc["chunks"]
    path = f"{schema.METADATA_KEY.decode()}.chunks"
    if not isinstance(chunks, list):
        raise ProcessedVideoError(file, path, "must be a list")
    parsed: dict[int, ChunkCounters] = {}
    for position, entry in enumerate(chunks):
        if not isinstance(entry, dict):
            raise ProcessedVideoError(file, f"{path}[{position}]", "must be a JSON object")
        numbers = {}
        for key in ("index", "num_filtered_by_motion", "num_filtered_by_aesthetic"):
            value = entry.get(key, 0)
            if not _is_int(value) or value < 0:
                raise ProcessedVideoError(
                    file, f"{path}[{position}].{key}", f"must be a non-negative integer, got {value!r}"
                )
            numbers[key] = value
        if numbers["index"] in parsed:
            raise ProcessedVideoError(file, f"{path}[{position}].index", f"duplicate chunk index {numbers['index']}")
        parsed[numbers["index"]] = ChunkCounters(**numbers)
    return tuple(parsed[i] for i in sorted(parsed))


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t))


def _is_string_map(t: pa.DataType) -> bool:
    return pa.types.is_map(t) and _is_string(t.key_type) and _is_string(t.item_type)


def _is_embedding_map(t: pa.DataType) -> bool:
    return (
        pa.types.is_map(t)
        and _is_string(t.key_type)
        and _is_list(t.item_type)
        and pa.types.is_floating(t.item_type.value_type)
    )


def _is_window_list(t: pa.DataType) -> str | None:
    """None when `t` is a valid windows type, otherwise what is wrong with it."""
    if not _is_list(t) or not pa.types.is_struct(t.value_type):
        return "must be a list of structs"
    struct = t.value_type
    names = {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}
    for name in (schema.WINDOW_START_FRAME, schema.WINDOW_END_FRAME):
        if name not in names or not pa.types.is_integer(names[name]):
            return f"struct field '{name}' must be an integer"
    if schema.WINDOW_WEBP in names and not _is_binary(names[schema.WINDOW_WEBP]):
        return f"struct field '{schema.WINDOW_WEBP}' must be binary"
    for name in (schema.WINDOW_CAPTIONS, schema.WINDOW_ENHANCED_CAPTIONS):
        if name in names and not _is_string_map(names[name]):
            return f"struct field '{name}' must be a map of string to string"
    return None


_TYPE_RULES: dict[str, tuple[Any, str]] = {
    schema.CLIP_UUID: (_is_string, "string"),
    schema.CHUNK_INDEX: (pa.types.is_integer, "integer"),
    schema.SPAN_START: (pa.types.is_floating, "float64"),
    schema.SPAN_END: (pa.types.is_floating, "float64"),
    schema.FILTERED: (pa.types.is_boolean, "bool"),
    schema.FILTERED_BY: (_is_string, "string"),
    schema.MP4: (_is_binary, "binary"),
    schema.EMBEDDINGS: (_is_embedding_map, "map<string, list<float>>"),
    schema.MOTION_GLOBAL_MEAN: (pa.types.is_floating, "float64"),
    schema.MOTION_PER_PATCH_MIN_256: (pa.types.is_floating, "float64"),
    schema.AESTHETIC_SCORE: (pa.types.is_floating, "float64"),
    schema.ERRORS: (_is_string_map, "map<string, string>"),
    schema.EXTRA_METADATA: (_is_string, "string"),
}


def check_arrow_schema(file: str, arrow_schema: pa.Schema) -> list[str]:
    """Raise on a missing required column or a wrong type; return the unknown columns to warn about."""
    names = arrow_schema.names
    for column in schema.REQUIRED_COLUMNS:
        if column not in names:
            raise ProcessedVideoError(file, column, "required column is missing")
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ProcessedVideoError(file, duplicated[0], "column appears more than once")
    for name in names:
        column_type = arrow_schema.field(name).type
        if name == schema.WINDOWS:
            problem = _is_window_list(column_type)
            if problem:
                raise ProcessedVideoError(file, name, f"{problem}, got {column_type}")
        elif name in _TYPE_RULES:
            check, expected = _TYPE_RULES[name]
            if not check(column_type):
                raise ProcessedVideoError(file, name, f"expected {expected}, got {column_type}")
    return [n for n in names if n not in schema.COLUMNS]


def _shown(name: str) -> str:
    """A name for an error message: a hostile million-character name is cut, its length said."""
    return name if len(name) <= 80 else f"{name[:80]}... ({len(name)} characters)"


def _looks_like_mp4(data: bytes | memoryview) -> bool:
    # ISO base media files start with a box whose type is `ftyp` (some writers put `free`/`mdat`
    # first, but every MP4 PyAV, ffmpeg or NeMo writes starts with ftyp).
    return len(data) >= 12 and data[4:8] == b"ftyp"


def _looks_like_webp(data: bytes | memoryview) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


class VideoChecks:
    """What must be consistent across a whole video, whether it is one file or several chunk files.

    Kept small: where each clip id was seen, the dimension of each embedding algorithm, the clip count.
    """

    def __init__(self) -> None:
        self.seen_ids: dict[str, tuple[str, int]] = {}
        self.embedding_dims: dict[str, int] = {}
        self.rows = 0


class ClipChecker:
    """Checks one file's clip rows one at a time, against its video's `VideoChecks`."""

    def __init__(self, file: str, info: VideoInfo, limits: ValidationLimits, video: VideoChecks | None = None) -> None:
        self.file = file
        self.info = info
        self.limits = limits
        self.video = video or VideoChecks()

    def fail(self, clip: ClipRecord, field: str, problem: str) -> ProcessedVideoError:
        return ProcessedVideoError(self.file, field, problem, row=clip.row, clip_id=clip.uuid)

    def check(self, clip: ClipRecord) -> None:
        self.video.rows += 1
        if self.video.rows > self.limits.max_clips:
            raise self.fail(clip, schema.CLIP_UUID, f"more than {self.limits.max_clips} clips in one video")
        if clip.uuid in self.video.seen_ids:
            file, row = self.video.seen_ids[clip.uuid]
            where = f"row {row}" if file == self.file else f"{file}, row {row}"
            raise self.fail(clip, schema.CLIP_UUID, f"duplicate clip id, first seen in {where}")
        self.video.seen_ids[clip.uuid] = (self.file, clip.row)
        self._check_span(clip)
        if clip.chunk_index < 0:
            raise self.fail(clip, schema.CHUNK_INDEX, f"must be >= 0, got {clip.chunk_index}")
        if self.info.chunk_index is not None and clip.chunk_index != self.info.chunk_index:
            raise self.fail(
                clip, schema.CHUNK_INDEX, f"{clip.chunk_index} in the file of chunk {self.info.chunk_index}"
            )
        if self.info.num_clip_chunks and clip.chunk_index >= self.info.num_clip_chunks:
            raise self.fail(
                clip,
                schema.CHUNK_INDEX,
                f"{clip.chunk_index} is not below num_clip_chunks {self.info.num_clip_chunks}",
            )
        if clip.mp4 is not None:
            if len(clip.mp4) > self.limits.max_mp4_bytes:
                raise self.fail(
                    clip, schema.MP4, f"{len(clip.mp4)} bytes exceeds the limit {self.limits.max_mp4_bytes}"
                )
            if not _looks_like_mp4(clip.mp4):
                raise self.fail(clip, schema.MP4, "bytes are not an MP4 (no 'ftyp' box)")
        self._check_windows(clip)
        self._check_embeddings(clip)
        for name in (schema.MOTION_GLOBAL_MEAN, schema.MOTION_PER_PATCH_MIN_256, schema.AESTHETIC_SCORE):
            value = getattr(clip, name)
            if value is not None and not math.isfinite(value):
                raise self.fail(clip, name, f"must be finite, got {value}")

    def _check_span(self, clip: ClipRecord) -> None:
        for name, value in ((schema.SPAN_START, clip.span_start), (schema.SPAN_END, clip.span_end)):
            if not math.isfinite(value) or value < 0:
                raise self.fail(clip, name, f"must be a finite number >= 0, got {value}")
        if clip.span_end <= clip.span_start:
            raise self.fail(clip, schema.SPAN_END, f"{clip.span_end} is not after span_start {clip.span_start}")

    def _check_windows(self, clip: ClipRecord) -> None:
        if len(clip.windows) > self.limits.max_windows_per_clip:
            raise self.fail(
                clip,
                schema.WINDOWS,
                f"{len(clip.windows)} windows exceed the limit {self.limits.max_windows_per_clip}",
            )
        seen: set[tuple[int, int]] = set()
        for position, window in enumerate(clip.windows):
            field = f"{schema.WINDOWS}[{position}]"
            if window.start_frame < 0:
                raise self.fail(clip, f"{field}.start_frame", f"must be >= 0, got {window.start_frame}")
            if window.end_frame < window.start_frame:
                raise self.fail(
                    clip,
                    f"{field}.end_frame",
                    f"{window.end_frame} is before start_frame {window.start_frame}",
                )
            if (window.start_frame, window.end_frame) in seen:
                raise self.fail(clip, field, f"duplicate window {window.start_frame}_{window.end_frame}")
            seen.add((window.start_frame, window.end_frame))
            if window.webp is not None:
                if len(window.webp) > self.limits.max_webp_bytes:
                    raise self.fail(
                        clip,
                        f"{field}.webp",
                        f"{len(window.webp)} bytes exceed the limit {self.limits.max_webp_bytes}",
                    )
                if not _looks_like_webp(window.webp):
                    raise self.fail(clip, f"{field}.webp", "bytes are not a WebP (no RIFF/WEBP header)")
            for kind, captions in (
                ("captions", window.captions),
                ("enhanced_captions", window.enhanced_captions),
            ):
                for model, text in captions.items():
                    if not model or "\x00" in model or len(model) > self.limits.max_name_chars:
                        raise self.fail(clip, f"{field}.{kind}", f"invalid model name {_shown(model)!r}")
                    if not isinstance(text, str):
                        raise self.fail(clip, f"{field}.{kind}[{model}]", "caption is not text")
                    if len(text) > self.limits.max_caption_chars:
                        raise self.fail(
                            clip,
                            f"{field}.{kind}[{model}]",
                            f"caption longer than {self.limits.max_caption_chars} characters",
                        )
            # The metadata JSON keys are `{model}_caption` and `{model}_enhanced_caption`: caption model
            # `m_enhanced` and enhanced model `m` would both write `m_enhanced_caption`, one losing the other.
            keys = {f"{m}_caption" for m in window.captions}
            clashes = sorted(keys & {f"{m}_enhanced_caption" for m in window.enhanced_captions})
            if clashes:
                problem = f"a caption model and an enhanced caption model both give the key {clashes[0]}"
                raise self.fail(clip, f"{field}.enhanced_captions", problem)

    def _check_embeddings(self, clip: ClipRecord) -> None:
        for algorithm, vector in clip.embeddings.items():
            field = f"{schema.EMBEDDINGS}[{algorithm}]"
            if not algorithm or "\x00" in algorithm or len(algorithm) > self.limits.max_name_chars:
                raise self.fail(clip, schema.EMBEDDINGS, f"invalid algorithm name {_shown(algorithm)!r}")
            if vector.size == 0:
                raise self.fail(clip, field, "embedding is empty")
            if vector.size > self.limits.max_embedding_dim:
                raise self.fail(
                    clip, field, f"dimension {vector.size} exceeds the limit {self.limits.max_embedding_dim}"
                )
            if not np.isfinite(vector).all():
                raise self.fail(clip, field, "embedding has non-finite values")
            expected = self.video.embedding_dims.setdefault(algorithm, vector.size)
            if vector.size != expected:
                raise self.fail(clip, field, f"dimension {vector.size} differs from {expected} of earlier clips")
