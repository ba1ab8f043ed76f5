"""The corpus of malformed and hostile processed videos (and hostile partition keys) that the tests in
`clip_assets_tests/hostile_inputs/` run through Dagster: how each input is built, and what the error
refusing it must name (the file, the field, and the row and clip id for clip data).
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clip_assets.components.resources import ValidationLimitsResource
from clip_assets.contract import ClipRecord, Window, schema
from clip_assets_tests.support.factories import make_clips, tiny_mp4, tiny_webp, video_info, write_video

INPUT_PATH = "/videos"
# Hostile values carry this marker, so a file that escaped anywhere near the output root is found by name.
MARKER = "rt-escape"
MiB = 1024 * 1024
# The batched corpus run uses small limits, so the size limits are exercised with small files
# (build_resources always builds the default ValidationLimitsResource; a test swaps in its own).
SMALL_LIMITS = ValidationLimitsResource(
    max_clips=3, max_windows_per_clip=2, max_embedding_dim=8, max_caption_chars=20, max_mp4_mb=1, max_webp_mb=1
)
# Good videos put around and between the bad ones.
GOODS = ("good-a.mp4", "good-m.mp4", "good-z.mp4")


# --------------------------------------------------------------------------------------------------
# Building processed videos


def source_of(name: str) -> str:
    return f"{INPUT_PATH}/{name}"


def clips_for(name: str, n: int = 2) -> list[ClipRecord]:
    return make_clips(n, source_video=source_of(name))


def inbox_file(inbox: Path, name: str) -> Path:
    return inbox / f"{name}.parquet"


def publish(inbox: Path, name: str, clips: list[ClipRecord] | None = None, source: str | None = None) -> Path:
    clips = clips_for(name) if clips is None else clips
    info = video_info(source or source_of(name), num_clips=len(clips))
    return write_video(inbox_file(inbox, name), clips, info=info)


def rewrite(path: Path, table: Callable[[pa.Table], pa.Table] | None = None, meta: Callable | None = None) -> None:
    """Rewrite a published file: `table(t) -> t`; `meta(doc) -> doc`, bytes (raw) or None (no metadata)."""
    data = pq.read_table(path)
    doc: Any = json.loads(data.schema.metadata[schema.METADATA_KEY])
    if table is not None:
        data = table(data)
    if meta is not None:
        doc = meta(doc)
    blob = doc if doc is None or isinstance(doc, bytes) else json.dumps(doc).encode()
    data = data.replace_schema_metadata({} if blob is None else {schema.METADATA_KEY: blob})
    pq.write_table(data, path)


def column(name: str, values: list[Any], type_: pa.DataType | None = None) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        new_type = type_ or table.schema.field(name).type
        return table.set_column(table.schema.get_field_index(name), name, pa.array(values, new_type))

    return change


def value(name: str, row: int, new: Any, type_: pa.DataType | None = None) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(name).to_pylist()
        values[row] = new
        return column(name, values, type_)(table)

    return change


def meta_set(**changes: Any) -> Callable[[dict], dict]:
    def change(doc: dict) -> dict:
        return {**doc, **changes}

    return change


def video_set(**changes: Any) -> Callable[[dict], dict]:
    def change(doc: dict) -> dict:
        return {**doc, "video": {**doc["video"], **changes}}

    return change


Build = Callable[[Path, str], "str | None"]


def clips_case(mutate: Callable[[list[ClipRecord]], str | None], n: int = 2) -> Build:
    """Good clips changed by `mutate`, which returns the clip id the error must name."""

    def build(inbox: Path, name: str) -> str | None:
        clips = clips_for(name, n)
        clip_id = mutate(clips)
        publish(inbox, name, clips)
        return clip_id

    return build


def at(row: int, **changes: Any) -> Callable[[list[ClipRecord]], str]:
    def mutate(clips: list[ClipRecord]) -> str:
        for attribute, new in changes.items():
            setattr(clips[row], attribute, new)
        return clips[row].uuid

    return mutate


def window_at(row: int, position: int, **changes: Any) -> Callable[[list[ClipRecord]], str]:
    def mutate(clips: list[ClipRecord]) -> str:
        for attribute, new in changes.items():
            setattr(clips[row].windows[position], attribute, new)
        return clips[row].uuid

    return mutate


def table_case(table: Callable | None = None, meta: Callable | None = None, clip_row: int | None = None) -> Build:
    """A good file rewritten at the Arrow level: types, nulls, metadata a writer would never produce."""

    def build(inbox: Path, name: str) -> str | None:
        clips = clips_for(name)
        rewrite(publish(inbox, name, clips), table, meta)
        return clips[clip_row].uuid if clip_row is not None else None

    return build


def bytes_case(damage: Callable[[bytes], bytes]) -> Build:
    def build(inbox: Path, name: str) -> None:
        path = publish(inbox, name)
        path.write_bytes(damage(path.read_bytes()))

    return build


def source_case(hostile: str) -> Build:
    def build(inbox: Path, name: str) -> None:
        publish(inbox, name, source=hostile)

    return build


def key_case(inbox: Path, name: str) -> None:
    """Hostile partition keys need no file of their own; the one they aim at is `outside.mp4.parquet`."""


# Media that only look like what they claim


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def webp_canvas(width: int, height: int) -> bytes:
    """A still WebP declaring a `width` x `height` canvas (VP8X) around a 1x1 image: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="WEBP", lossless=True)
    image_chunk = buffer.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + image_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def riff_garbage() -> bytes:
    return b"RIFF" + struct.pack("<I", 100) + b"WEBP" + b"\xab" * 96


def ftyp_garbage() -> bytes:
    return tiny_mp4()[:32] + b"\x00\x01" * 200


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def fullwidth(text: str) -> str:
    return text.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789abcdef"})


def vector(*values: float, dim: int = 8) -> np.ndarray:
    data = np.linspace(-1, 1, dim, dtype=np.float32)
    data[: len(values)] = values
    return data


def first_page_damaged(data: bytes) -> bytes:
    """Flip the header of the first data page of `span_start`: the footer still reads, the data does not."""
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    offset = metadata.row_group(0).column(names.index(schema.SPAN_START)).data_page_offset
    damaged = bytearray(data)
    for i in range(offset, offset + 16):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def nested(depth: int) -> str:
    return '{"deep": ' + "[" * depth + "]" * depth + "}"


def embeddings_as_ints(table: pa.Table) -> pa.Table:
    rows = [[(k, [int(x) for x in v]) for k, v in row] for row in table.column(schema.EMBEDDINGS).to_pylist()]
    return column(schema.EMBEDDINGS, rows, pa.map_(pa.string(), pa.list_(pa.int32())))(table)


def duplicate_embedding_key(table: pa.Table) -> pa.Table:
    rows = table.column(schema.EMBEDDINGS).to_pylist()
    rows[1] = rows[1] + rows[1]
    return column(schema.EMBEDDINGS, rows)(table)


def null_in_embedding(table: pa.Table) -> pa.Table:
    rows = table.column(schema.EMBEDDINGS).to_pylist()
    rows[1] = [(key, [None, *vector[1:]]) for key, vector in rows[1]]
    return column(schema.EMBEDDINGS, rows, table.schema.field(schema.EMBEDDINGS).type)(table)


def captions_as_binary(table: pa.Table) -> pa.Table:
    window = pa.struct(
        [
            ("start_frame", pa.int32()),
            ("end_frame", pa.int32()),
            ("webp", pa.binary()),
            ("captions", pa.map_(pa.string(), pa.binary())),
        ]
    )
    rows = [
        [
            {
                "start_frame": w["start_frame"],
                "end_frame": w["end_frame"],
                "webp": w["webp"],
                "captions": [(k, v.encode()) for k, v in w["captions"]],
            }
            for w in row
        ]
        for row in table.column(schema.WINDOWS).to_pylist()
    ]
    return column(schema.WINDOWS, rows, pa.list_(window))(table)


def derived_ids(*changes: tuple[int, str, float]) -> Callable[[pa.Table], pa.Table]:
    """No clip_uuid column (ids are derived from the spans), then spans changed: (row, column, value)."""

    def change(table: pa.Table) -> pa.Table:
        table = table.drop_columns([schema.CLIP_UUID])
        for row, name, new in changes:
            table = value(name, row, new)(table)
        return table

    return change


def duplicate_derived(clips: list[ClipRecord]) -> str:
    """Null ids (derived by the reader), and row 2 with row 0's span: the same derived id twice."""
    derived = clips[0].uuid  # make_clips derives ids exactly as the reader does
    for clip in clips:
        clip.uuid = None  # type: ignore[assignment]
    clips[2].span_start, clips[2].span_end = clips[0].span_start, clips[0].span_end
    return derived


def given_equals_derived(clips: list[ClipRecord]) -> str:
    """Row 1's id is derived; row 2 gives that same id explicitly."""
    derived = clips[1].uuid
    clips[1].uuid = None  # type: ignore[assignment]
    clips[2].uuid = derived
    return derived


def bad_id(row: int, make: Callable[[str], str]) -> Callable[[list[ClipRecord]], None]:
    """Row `row`'s id replaced by `make(its real id)`; the error names the refused value, not a clip id."""

    def mutate(clips: list[ClipRecord]) -> None:
        clips[row].uuid = make(clips[row].uuid)

    return mutate


def null_window_start(table: pa.Table) -> pa.Table:
    rows = table.column(schema.WINDOWS).to_pylist()
    rows[1][0]["start_frame"] = None
    nullable = pa.struct([field.with_nullable(True) for field in schema.WINDOW_TYPE])
    return column(schema.WINDOWS, rows, pa.list_(nullable))(table)


def oversized_webp() -> bytes:
    return b"RIFF" + struct.pack("<I", MiB + 4) + b"WEBP" + bytes(MiB)


# --------------------------------------------------------------------------------------------------
# The corpus


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Case:
    """One bad input. `field`: what the message must name (any of a tuple; None: any field at all)."""

    kind: str
    build: Build
    field: str | tuple[str, ...] | None
    row: int | None = None
    mentions: str = ""  # more text the message must hold (a refused value)
    key: str = ""  # the partition key, when the case is the key itself
    names_file: str = ""  # how the message names the file, when not `<inbox>/<key>.parquet`

    @property
    def name(self) -> str:
        return self.key or f"{slug(self.kind)}.mp4"

    @property
    def fields(self) -> tuple[str, ...]:
        return () if self.field is None else (self.field,) if isinstance(self.field, str) else self.field


NAN, INF = math.nan, math.inf
SOURCE = "clip_assets.source_video"
ANY_KEY_FIELD = ("<partition key>", "<file>")


def key_refused(key: str, names_file: str = "", field: tuple[str, ...] = ("<partition key>",)) -> Case:
    return Case(f"partition key: {key}", key_case, field, key=key, names_file=names_file or key)


CASES: list[Case] = [
    # The file itself
    Case("footer: truncated file", bytes_case(half), "<parquet footer>"),
    Case("footer: empty file", bytes_case(lambda data: b""), "<parquet footer>"),
    Case("footer: random bytes", bytes_case(lambda data: np.random.default_rng(1).bytes(4096)), "<parquet footer>"),
    Case("footer: a PNG named .parquet", bytes_case(lambda data: png_bytes()), "<parquet footer>"),
    Case(
        "footer: PAR1 magic around garbage", bytes_case(lambda data: b"PAR1" + bytes(64) + b"PAR1"), "<parquet footer>"
    ),
    Case("data page corrupt behind a readable footer", bytes_case(first_page_damaged), None),
    # Columns
    Case("column missing: span_end", table_case(lambda t: t.drop_columns([schema.SPAN_END])), "span_end"),
    Case("column missing: filtered", table_case(lambda t: t.drop_columns([schema.FILTERED])), "filtered"),
    Case(
        "column type: chunk_index as string",
        table_case(column(schema.CHUNK_INDEX, ["0", "0"], pa.string())),
        "chunk_index",
    ),
    Case("column type: span_start as integer", table_case(column(schema.SPAN_START, [0, 1], pa.int64())), "span_start"),
    Case("column type: filtered as integer", table_case(column(schema.FILTERED, [0, 0], pa.int8())), "filtered"),
    Case("column type: clip_uuid as integer", table_case(column(schema.CLIP_UUID, [1, 2], pa.int64())), "clip_uuid"),
    Case("column type: mp4 as string", table_case(column(schema.MP4, ["a", "b"], pa.string())), "mp4"),
    Case(
        "column type: windows as list of int",
        table_case(column(schema.WINDOWS, [[1], [2]], pa.list_(pa.int32()))),
        "windows",
    ),
    Case("column type: embeddings not float", table_case(embeddings_as_ints), "embeddings"),
    Case("column type: captions not text", table_case(captions_as_binary), "windows"),
    Case(
        "column twice: span_start",
        table_case(lambda t: t.append_column(schema.SPAN_START, t.column(schema.SPAN_START))),
        "span_start",
    ),
    # File metadata
    Case("metadata: missing", table_case(meta=lambda doc: None), "clip_assets"),
    Case("metadata: not UTF-8", table_case(meta=lambda doc: b"\xff\xfe{"), "clip_assets"),
    Case("metadata: not JSON", table_case(meta=lambda doc: b"{not json"), "clip_assets"),
    Case("metadata: a JSON array", table_case(meta=lambda doc: b"[1, 2]"), "clip_assets"),
    Case(
        "metadata: JSON nested 100000 deep",
        table_case(
            meta=lambda doc: (
                '{"format_version": 1, "source_video": "/videos/x", "deep": ' + nested(100_000) + "}"
            ).encode()
        ),
        "clip_assets",
    ),
    Case("format_version: 3", table_case(meta=meta_set(format_version=3)), "clip_assets.format_version"),
    Case("format_version: string", table_case(meta=meta_set(format_version="1")), "clip_assets.format_version"),
    Case("format_version: null", table_case(meta=meta_set(format_version=None)), "clip_assets.format_version"),
    Case("format_version: true", table_case(meta=meta_set(format_version=True)), "clip_assets.format_version"),
    Case(
        "source_video: missing",
        table_case(meta=lambda doc: {k: v for k, v in doc.items() if k != "source_video"}),
        SOURCE,
    ),
    Case("source_video: a number", table_case(meta=meta_set(source_video=42)), SOURCE),
    Case("video: not an object", table_case(meta=meta_set(video=[64, 48])), "clip_assets.video"),
    Case("video.width: negative", table_case(meta=video_set(width=-1)), "clip_assets.video.width"),
    Case("video.framerate: NaN", table_case(meta=video_set(framerate=NAN)), "clip_assets.video.framerate"),
    Case(
        "video.framerate: missing while ids are derived",
        table_case(lambda t: t.drop_columns([schema.CLIP_UUID]), video_set(framerate=None)),
        "clip_assets.video.framerate",
    ),
    Case("num_clip_chunks: negative", table_case(meta=meta_set(num_clip_chunks=-1)), "clip_assets.num_clip_chunks"),
    Case(
        "num_clip_chunks: 1000 chunks for 2 clips",
        table_case(meta=meta_set(num_clip_chunks=1000)),
        "clip_assets.num_clip_chunks",
    ),
    Case("chunks: not a list", table_case(meta=meta_set(chunks="0")), "clip_assets.chunks"),
    Case(
        "chunks: duplicate index",
        table_case(meta=meta_set(chunks=[{"index": 0}, {"index": 0}])),
        "clip_assets.chunks[1].index",
    ),
    # Spans and the other required values
    Case("span: null", table_case(value(schema.SPAN_START, 1, None)), "span_start", row=1),
    Case("span: NaN", clips_case(at(1, span_start=NAN)), "span_start", row=1),
    Case("span: infinite", clips_case(at(1, span_end=INF)), "span_end", row=1),
    Case("span: negative", clips_case(at(0, span_start=-1.0)), "span_start", row=0),
    Case("span: end equals start", clips_case(at(1, span_end=8 / 24)), "span_end", row=1),
    Case("span: end before start", clips_case(at(1, span_end=0.1)), "span_end", row=1),
    Case(
        "span: NaN while ids are derived",
        table_case(derived_ids((1, schema.SPAN_START, NAN))),
        "span_start",
        row=1,
    ),
    Case(
        "span: infinite while ids are derived",
        table_case(derived_ids((1, schema.SPAN_END, INF))),
        "span_end",
        row=1,
    ),
    Case(
        "video.framerate: 1e308 while ids are derived",
        table_case(derived_ids((1, schema.SPAN_END, 2.0)), video_set(framerate=1e308)),
        ("clip_assets.video.framerate", "span_end", "clip_uuid"),
    ),
    Case("filtered: null", table_case(value(schema.FILTERED, 0, None)), "filtered", row=0),
    Case("chunk_index: negative", clips_case(at(1, chunk_index=-1)), "chunk_index", row=1),
    Case("chunk_index: beyond num_clip_chunks", clips_case(at(1, chunk_index=5)), "chunk_index", row=1),
    Case("score: NaN", clips_case(at(1, motion_score_global_mean=NAN)), "motion_score_global_mean", row=1),
    Case("score: infinite", clips_case(at(0, aesthetic_score=INF)), "aesthetic_score", row=0),
    Case("errors: null message", clips_case(at(1, errors={"transcode": None})), "errors", row=1),
    # Windows
    Case("window: negative start", clips_case(window_at(1, 0, start_frame=-1)), "windows[0].start_frame", row=1),
    Case("window: end before start", clips_case(window_at(1, 1, end_frame=2)), "windows[1].end_frame", row=1),
    Case("window: duplicate", clips_case(window_at(1, 1, start_frame=0, end_frame=4)), "windows[1]", row=1),
    Case("window: null start", table_case(null_window_start, clip_row=1), "windows[0]", row=1),
    Case(
        "window: frames far beyond the clip",
        clips_case(window_at(1, 1, end_frame=2**31 - 1)),
        "windows[1].end_frame",
        row=1,
    ),
    # Embeddings
    Case(
        "embedding: NaN",
        clips_case(at(1, embeddings={"cosmos-embed1": vector(NAN)})),
        "embeddings[cosmos-embed1]",
        row=1,
    ),
    Case(
        "embedding: infinite",
        clips_case(at(1, embeddings={"cosmos-embed1": vector(1, -INF)})),
        "embeddings[cosmos-embed1]",
        row=1,
    ),
    Case(
        "embedding: empty",
        clips_case(at(1, embeddings={"cosmos-embed1": np.zeros(0, np.float32)})),
        "embeddings[cosmos-embed1]",
        row=1,
    ),
    Case(
        "embedding: mixed dimensions",
        clips_case(at(1, embeddings={"cosmos-embed1": vector(dim=4)})),
        "embeddings[cosmos-embed1]",
        row=1,
    ),
    Case(
        "embedding: algorithm name with NUL",
        clips_case(at(1, embeddings={"cosmos\x00embed1": vector()})),
        "embeddings",
        row=1,
    ),
    Case("embedding: empty algorithm name", clips_case(at(1, embeddings={"": vector()})), "embeddings", row=1),
    Case("embedding: null value", table_case(null_in_embedding, clip_row=1), "embeddings[cosmos-embed1]", row=1),
    Case("embedding: algorithm twice in a clip", table_case(duplicate_embedding_key, clip_row=1), "embeddings", row=1),
    # Clip ids
    Case(
        "clip id: duplicate",
        clips_case(lambda c: setattr(c[2], "uuid", c[0].uuid) or c[0].uuid, n=3),
        "clip_uuid",
        row=2,
    ),
    Case("clip id: duplicate after derivation", clips_case(duplicate_derived, n=3), "clip_uuid", row=2),
    Case("clip id: given equals a derived one", clips_case(given_equals_derived, n=3), "clip_uuid", row=2),
    Case(
        "clip id: relative path",
        clips_case(bad_id(1, lambda u: f"../../{MARKER}")),
        "clip_uuid",
        row=1,
        mentions=MARKER,
    ),
    Case(
        "clip id: absolute path", clips_case(bad_id(1, lambda u: f"/tmp/{MARKER}")), "clip_uuid", row=1, mentions=MARKER
    ),
    Case(
        "clip id: backslash path",
        clips_case(bad_id(1, lambda u: f"..\\..\\{MARKER}")),
        "clip_uuid",
        row=1,
        mentions=MARKER,
    ),
    Case(
        "clip id: UUID with a path",
        clips_case(bad_id(1, lambda u: f"{u}/../../{MARKER}")),
        "clip_uuid",
        row=1,
        mentions=MARKER,
    ),
    Case("clip id: UUID in braces", clips_case(bad_id(1, lambda u: "{" + u + "}")), "clip_uuid", row=1),
    Case("clip id: URN", clips_case(bad_id(1, lambda u: f"urn:uuid:{u}")), "clip_uuid", row=1, mentions="urn:uuid:"),
    Case("clip id: trailing NUL", clips_case(bad_id(1, lambda u: u + "\x00")), "clip_uuid", row=1),
    Case("clip id: fullwidth digits", clips_case(bad_id(1, fullwidth)), "clip_uuid", row=1),
    Case("clip id: empty", clips_case(bad_id(1, lambda u: "")), "clip_uuid", row=1),
    # MP4 bytes that are not MP4
    Case("mp4: random bytes", clips_case(at(1, mp4=np.random.default_rng(2).bytes(512))), "mp4", row=1),
    Case("mp4: truncated real MP4", clips_case(at(1, mp4=half(tiny_mp4()))), "mp4", row=1),
    Case("mp4: a PNG image", clips_case(at(1, mp4=png_bytes())), "mp4", row=1),
    Case("mp4: ftyp header then garbage", clips_case(at(1, mp4=ftyp_garbage())), "mp4", row=1),
    Case("mp4: empty", clips_case(at(1, mp4=b"")), "mp4", row=1),
    Case("mp4: a WebP", clips_case(at(1, mp4=tiny_webp())), "mp4", row=1),
    # WebP bytes that are not WebP
    Case("webp: truncated", clips_case(window_at(0, 1, webp=half(tiny_webp(3)))), "windows[1].webp", row=0),
    Case("webp: RIFF header then garbage", clips_case(window_at(0, 1, webp=riff_garbage())), "windows[1].webp", row=0),
    Case("webp: a PNG image", clips_case(window_at(0, 1, webp=png_bytes())), "windows[1].webp", row=0),
    Case("webp: an MP4", clips_case(window_at(0, 1, webp=tiny_mp4())), "windows[1].webp", row=0),
    Case("webp: empty", clips_case(window_at(0, 1, webp=b"")), "windows[1].webp", row=0),
    Case(
        "webp: decompression bomb canvas",
        clips_case(window_at(0, 1, webp=webp_canvas(16383, 16383))),
        "windows[1].webp",
        row=0,
    ),
    # Captions
    Case("caption: null text", clips_case(window_at(1, 0, captions={"qwen": None})), "windows[0]", row=1),
    Case(
        "caption: model name with NUL",
        clips_case(window_at(1, 0, captions={"qw\x00en": "x"})),
        "windows[0].captions",
        row=1,
    ),
    Case("caption: empty model name", clips_case(window_at(1, 0, captions={"": "x"})), "windows[0].captions", row=1),
    Case(
        "caption: enhanced model name with NUL",
        clips_case(window_at(1, 0, enhanced_captions={"lm\x00": "x"})),
        "windows[0].enhanced_captions",
        row=1,
    ),
    Case(
        "caption: model names colliding as JSON keys",
        clips_case(window_at(1, 0, captions={"m_enhanced": "plain"}, enhanced_captions={"m": "enhanced"})),
        ("windows[0].captions", "windows[0].enhanced_captions"),
        row=1,
    ),
    Case(
        "caption: model name of a million characters",
        clips_case(window_at(1, 0, captions={"m" * 1_000_001: "x"})),
        "windows[0].captions",
        row=1,
    ),
    # extra_metadata
    Case(
        "extra_metadata: not JSON",
        table_case(value(schema.EXTRA_METADATA, 1, "{not json"), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: a JSON array",
        table_case(value(schema.EXTRA_METADATA, 1, "[1, 2]"), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: a JSON string",
        table_case(value(schema.EXTRA_METADATA, 1, '"x"'), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: overrides clip_location",
        clips_case(at(1, extra_metadata={"clip_location": f"/tmp/{MARKER}"})),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: overrides span_uuid",
        clips_case(at(1, extra_metadata={"span_uuid": "x"})),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: NaN",
        table_case(value(schema.EXTRA_METADATA, 1, '{"score": NaN}'), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: Infinity",
        table_case(value(schema.EXTRA_METADATA, 1, '{"score": -Infinity}'), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    Case(
        "extra_metadata: JSON nested 100000 deep",
        table_case(value(schema.EXTRA_METADATA, 1, nested(100_000)), clip_row=1),
        "extra_metadata",
        row=1,
    ),
    # Sizes beyond the limits (SMALL_LIMITS in the batched run)
    Case("limit: max_clips", clips_case(lambda clips: None, n=4), "clip_uuid"),
    Case(
        "limit: max_windows_per_clip",
        clips_case(lambda c: c[1].windows.append(Window(8, 12, tiny_webp(7))) or c[1].uuid),
        "windows",
        row=1,
    ),
    Case(
        "limit: max_embedding_dim",
        clips_case(at(0, embeddings={"cosmos-embed1": vector(dim=9)})),
        "embeddings[cosmos-embed1]",
        row=0,
    ),
    Case(
        "limit: max_caption_chars",
        clips_case(window_at(1, 0, captions={"qwen": "x" * 21})),
        "windows[0].captions[qwen]",
        row=1,
    ),
    Case("limit: max_mp4_mb", clips_case(at(1, mp4=b"\x00\x00\x00\x18ftypisom" + bytes(MiB))), "mp4", row=1),
    Case("limit: max_webp_mb", clips_case(window_at(1, 0, webp=oversized_webp())), "windows[0].webp", row=1),
    # Hostile source_video values (input_path is /videos)
    Case("source_video: relative ../../", source_case(f"../../etc/{MARKER}.mp4"), SOURCE),
    Case("source_video: .. after input_path", source_case(f"/videos/../../{MARKER}.mp4"), SOURCE),
    Case("source_video: .. inside the relative path", source_case(f"/videos/a/../../{MARKER}.mp4"), SOURCE),
    Case("source_video: . and .. mixed", source_case(f"/videos/./../{MARKER}.mp4"), SOURCE),
    Case("source_video: backslashes", source_case(f"/videos/a\\..\\..\\{MARKER}.mp4"), SOURCE),
    Case("source_video: NUL", source_case(f"/videos/{MARKER}\x00.mp4"), SOURCE),
    Case("source_video: control character", source_case(f"/videos/{MARKER}\x01.mp4"), SOURCE),
    Case("source_video: DEL", source_case(f"/videos/{MARKER}\x7f.mp4"), SOURCE),
    Case("source_video: s3 URL with ..", source_case(f"s3://evil/../{MARKER}.mp4"), SOURCE),
    Case("source_video: file URL", source_case(f"file:///videos/{MARKER}.mp4"), SOURCE),
    Case("source_video: equal to input_path", source_case("/videos"), SOURCE),
    Case("source_video: input_path with a slash", source_case("/videos/"), SOURCE),
    Case("source_video: input_path with /.", source_case("/videos/."), SOURCE),
    Case("source_video: string prefix of input_path", source_case(f"/videos2/{MARKER}.mp4"), SOURCE),
    Case("source_video: fullwidth dots", source_case(f"/videos/\uff0e\uff0e/\uff0e\uff0e/{MARKER}.mp4"), SOURCE),
    Case("source_video: fullwidth solidus", source_case(f"/videos/a\uff0f..\uff0f..\uff0f{MARKER}.mp4"), SOURCE),
    Case("source_video: two dot leader", source_case(f"/videos/\u2025/\u2025/{MARKER}.mp4"), SOURCE),
    Case("source_video: C1 control character", source_case(f"/videos/{MARKER}\x85\x9b.mp4"), SOURCE),
    Case("source_video: segment too long for a file name", source_case(f"/videos/{MARKER}{'x' * 300}.mp4"), SOURCE),
    # Hostile partition keys: the file they aim at, `outside.mp4.parquet`, sits beside the inbox
    key_refused("%2E%2E/outside.mp4"),
    key_refused("../outside.mp4"),
    key_refused("/tmp/outside.mp4"),
    key_refused("%2Ftmp%2Foutside.mp4"),
    key_refused("bad%00key.mp4"),
    key_refused("..%5Coutside.mp4"),
    key_refused("%FF%FE.mp4"),
    key_refused("s3://evil/outside.mp4"),
    key_refused("./good-a.mp4"),
    key_refused("good-a.mp4/%2E%2E/good-a.mp4"),
    key_refused("%252E%252E/outside.mp4", "%2E%2E/outside.mp4.parquet", ANY_KEY_FIELD),
    key_refused("\uff0e\uff0e/outside.mp4", "\uff0e\uff0e/outside.mp4.parquet", ANY_KEY_FIELD),
    key_refused("file:..%2Foutside.mp4", "outside.mp4", ANY_KEY_FIELD),
]
assert len({case.name for case in CASES}) == len(CASES), "two cases share a partition key"
CASE_BY_KIND = {case.kind: case for case in CASES}
