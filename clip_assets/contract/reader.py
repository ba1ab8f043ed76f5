"""Streaming reader of processed-video files: validate up front, then yield clips batch by batch.

Memory stays bounded by `batch_size` clips (and by the producer's row-group size, which our writer
keeps small), whatever the video's length. Each caller projects only the columns it needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_assets.contract import schema
from clip_assets.contract.errors import ProcessedVideoError
from clip_assets.contract.identity import canonical_uuid, derive_clip_uuid
from clip_assets.contract.limits import ValidationLimits
from clip_assets.contract.records import ClipRecord, EmbeddingLayout, VideoInfo, Window
from clip_assets.contract.validation import (
    ClipChecker,
    VideoChecks,
    check_arrow_schema,
    load_json,
    parse_file_metadata,
)

ALL_COLUMNS: frozenset[str] = frozenset(schema.COLUMNS) | {schema.WINDOW_WEBP_COLUMN}
# Parquet reads per column stream: one buffer of this size per projected leaf column.
BUFFER_SIZE = 1 << 20


class ProcessedVideoReader:
    """Opens one processed-video file and checks its footer, schema and metadata immediately.

    `name` is what errors call the file (the inbox-relative path or URL), never a temp path.
    """

    def __init__(
        self,
        source: str | BinaryIO | pa.NativeFile,
        name: str,
        *,
        batch_size: int = 4,
        limits: ValidationLimits | None = None,
        footer: pq.FileMetaData | None = None,
    ) -> None:
        """`footer` is this very file's, read before: each family reopens the file, the footer need not
        be parsed again (for a small video that parsing is a good part of the read)."""
        self.name = name
        self.batch_size = batch_size
        self.limits = limits or ValidationLimits()
        try:
            self._file = pq.ParquetFile(source, metadata=footer, buffer_size=BUFFER_SIZE, pre_buffer=False)
        except (pa.ArrowException, OSError) as exc:
            raise ProcessedVideoError(name, "<parquet footer>", f"not a readable Parquet file ({exc})") from None
        arrow_schema = self._file.schema_arrow
        # The footer's key-value metadata holds Arrow schema metadata too, and what writers add last.
        metadata = self._file.metadata.metadata or {}
        self.info: VideoInfo = parse_file_metadata(name, metadata.get(schema.METADATA_KEY))
        self.unknown_columns: list[str] = check_arrow_schema(name, arrow_schema)
        self.columns_present: frozenset[str] = frozenset(arrow_schema.names) & set(schema.COLUMNS)
        self.num_rows: int = self._file.metadata.num_rows
        if self.num_rows > self.limits.max_clips:
            raise ProcessedVideoError(
                name, schema.CLIP_UUID, f"{self.num_rows} clips exceed the limit {self.limits.max_clips}"
            )
        # Each chunk gets a summary file: more chunks than clips would be files no clip accounts for. A
        # chunk file's count is bounded by the chunk files there are, each of them a file of its own.
        most_chunks = max(1, self.info.num_total_clips, self.num_rows)
        if self.info.chunk_index is not None:
            most_chunks = max(most_chunks, self.info.num_clip_chunks)
        if self.info.num_total_clips > self.limits.max_clips:
            raise ProcessedVideoError(
                name, "clip_assets.num_total_clips", f"{self.info.num_total_clips} exceeds {self.limits.max_clips}"
            )
        chunk_indexes = [c.index for c in self.info.chunks or ()]
        if self.info.num_clip_chunks > most_chunks or any(i >= most_chunks for i in chunk_indexes):
            raise ProcessedVideoError(
                name,
                "clip_assets.num_clip_chunks",
                f"{max([self.info.num_clip_chunks, *chunk_indexes])} chunks for {most_chunks} clips at most",
            )
        if self.columns_present.isdisjoint({schema.CLIP_UUID}) and self.info.framerate is None:
            raise ProcessedVideoError(
                name,
                "clip_assets.video.framerate",
                "needed to derive clip ids when there is no clip_uuid column",
            )

    @property
    def footer(self) -> pq.FileMetaData:
        return self._file.metadata

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ProcessedVideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parquet_columns(self, wanted: frozenset[str]) -> list[str]:
        """Parquet leaf-path prefixes for the wanted logical columns (nested names vary by writer)."""
        columns: list[str] = []
        for name in self._file.schema_arrow.names:
            if name not in wanted or name == schema.WINDOWS:
                continue
            columns.append(name)
        if schema.WINDOWS in wanted and schema.WINDOWS in self.columns_present:
            columns += self._window_columns(include_webp=schema.WINDOW_WEBP_COLUMN in wanted)
        return columns

    def _window_columns(self, *, include_webp: bool) -> list[str]:
        """Leaf prefixes `windows.<list>.<element>.<field>` of the window fields, WebP bytes only if asked.

        Writers name the list levels differently (`list.element`, `list.item`); a legacy two-level
        list has no such prefix, and then the whole column is read.
        """
        all_paths = (self._file.schema.column(i).path.split(".") for i in range(len(self._file.schema)))
        paths = [parts for parts in all_paths if parts[0] == schema.WINDOWS]
        if any(len(parts) < 4 for parts in paths):
            return [schema.WINDOWS]
        prefixes = dict.fromkeys(
            ".".join(parts[:4]) for parts in paths if include_webp or parts[3] != schema.WINDOW_WEBP
        )
        return list(prefixes)

    def iter_clips(
        self, columns: Iterable[str] = ALL_COLUMNS, video_checks: VideoChecks | None = None
    ) -> Iterator[ClipRecord]:
        """Yield every clip in file order, checked, with only `columns` (plus identity) filled in.

        `video_checks` carries what must hold across the files of a video that arrives in chunks
        (unique clip ids, one dimension per embedding algorithm); by default the file is the video.
        """
        wanted = frozenset(columns) | set(schema.IDENTITY_COLUMNS)
        unknown = wanted - ALL_COLUMNS
        if unknown:
            raise ValueError(f"unknown contract columns requested: {sorted(unknown)}")
        checker = ClipChecker(self.name, self.info, self.limits, video_checks)
        row = 0
        projected = self._parquet_columns(wanted)
        # Without threads: a batch of 4 clips is too small to split, and the pool costs more than it saves.
        batches = self._file.iter_batches(batch_size=self.batch_size, columns=projected, use_threads=False)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:  # a damaged page behind a readable footer
                raise ProcessedVideoError(
                    self.name, ", ".join(projected), f"unreadable data from row {row} on ({exc})", row=row
                ) from None
            for clip in self._records(batch, row):
                checker.check(clip)
                yield clip
            row += batch.num_rows

    def _records(self, batch: pa.RecordBatch, first_row: int) -> Iterator[ClipRecord]:
        names = batch.schema.names
        data: dict[str, list[Any]] = {}
        for name in names:
            if name == schema.EMBEDDINGS:
                data[name] = _embedding_rows(batch.column(name))
            elif name == schema.MP4:
                data[name] = _binary_views(batch.column(name))
            elif name == schema.WINDOWS:
                data[name] = _window_rows(batch.column(name))
            else:
                data[name] = batch.column(name).to_pylist()
        for offset in range(batch.num_rows):
            row = first_row + offset
            yield self._record(row, {name: values[offset] for name, values in data.items()})

    def _record(self, row: int, values: dict[str, Any]) -> ClipRecord:
        def fail(field: str, problem: str, clip_id: str | None = None) -> ProcessedVideoError:
            return ProcessedVideoError(self.name, field, problem, row=row, clip_id=clip_id)

        for name in (schema.CHUNK_INDEX, schema.SPAN_START, schema.SPAN_END, schema.FILTERED):
            if values.get(name) is None:
                raise fail(name, "must not be null")
        raw_id = values.get(schema.CLIP_UUID)
        if raw_id is None:
            if self.info.framerate is None:
                raise fail(schema.CLIP_UUID, "null, and no video framerate to derive it from")
            for name in (schema.SPAN_START, schema.SPAN_END):
                if not math.isfinite(values[name]):
                    raise fail(name, f"must be finite, got {values[name]}")
            try:
                clip_id = derive_clip_uuid(
                    self.info.source_video,
                    values[schema.SPAN_START],
                    values[schema.SPAN_END],
                    self.info.framerate,
                )
            except (OverflowError, ValueError) as exc:
                raise fail(schema.CLIP_UUID, f"null, and cannot be derived from span and framerate ({exc})") from None
        else:
            try:
                clip_id = canonical_uuid(raw_id)
            except ValueError:
                raise fail(schema.CLIP_UUID, f"{raw_id!r} is not a UUID") from None
        clip = ClipRecord(
            row=row,
            uuid=clip_id,
            chunk_index=int(values[schema.CHUNK_INDEX]),
            span_start=float(values[schema.SPAN_START]),
            span_end=float(values[schema.SPAN_END]),
            filtered=bool(values[schema.FILTERED]),
            filtered_by=values.get(schema.FILTERED_BY),
            mp4=values.get(schema.MP4),
            motion_score_global_mean=values.get(schema.MOTION_GLOBAL_MEAN),
            motion_score_per_patch_min_256=values.get(schema.MOTION_PER_PATCH_MIN_256),
            aesthetic_score=values.get(schema.AESTHETIC_SCORE),
        )
        if values.get(schema.ERRORS) is not None:
            clip.errors = _string_map(values[schema.ERRORS], lambda p: fail(schema.ERRORS, p, clip_id))
        if values.get(schema.WINDOWS) is not None:
            clip.windows = [
                self._window(window, lambda p, i=i: fail(f"{schema.WINDOWS}[{i}]", p, clip_id))
                for i, window in enumerate(values[schema.WINDOWS])
            ]
        if values.get(schema.EMBEDDINGS) is not None:
            clip.embeddings = _unique_map(values[schema.EMBEDDINGS], lambda p: fail(schema.EMBEDDINGS, p, clip_id))
            for algorithm, layout in self.info.embedding_layouts.items():
                if algorithm in clip.embeddings:
                    field = f"{schema.EMBEDDINGS}[{algorithm}]"
                    clip.embeddings[algorithm] = _laid_out(clip.embeddings[algorithm], layout, field, fail, clip_id)
        extra = values.get(schema.EXTRA_METADATA)
        if extra is not None:
            if len(extra) > self.limits.max_caption_chars:
                raise fail(schema.EXTRA_METADATA, f"longer than {self.limits.max_caption_chars} characters", clip_id)
            try:
                parsed = load_json(extra)
            except ValueError as exc:
                raise fail(schema.EXTRA_METADATA, f"not JSON ({exc})", clip_id) from None
            if not isinstance(parsed, dict):
                raise fail(schema.EXTRA_METADATA, "must be a JSON object", clip_id)
            clip.extra_metadata = parsed
        return clip

    @staticmethod
    def _window(value: dict[str, Any] | None, fail: Any) -> Window:
        if value is None:
            raise fail("window must not be null")
        for name in (schema.WINDOW_START_FRAME, schema.WINDOW_END_FRAME):
            if value.get(name) is None:
                raise fail(f"{name} must not be null")
        return Window(
            start_frame=int(value[schema.WINDOW_START_FRAME]),
            end_frame=int(value[schema.WINDOW_END_FRAME]),
            webp=value.get(schema.WINDOW_WEBP),
            captions=_string_map(value.get(schema.WINDOW_CAPTIONS) or [], fail),
            enhanced_captions=_string_map(value.get(schema.WINDOW_ENHANCED_CAPTIONS) or [], fail),
        )


def _laid_out(vector: np.ndarray, layout: EmbeddingLayout, field: str, fail: Any, clip_id: str) -> np.ndarray:
    """A flat stored vector in its declared dtype and shape; refuses values the dtype cannot hold exactly."""
    if vector.size != math.prod(layout.shape):
        raise fail(field, f"{vector.size} values do not fill the declared shape {list(layout.shape)}", clip_id)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = vector.astype(layout.dtype)
        exact = np.array_equal(converted.astype(vector.dtype), vector, equal_nan=True)
    if not exact:
        raise fail(field, f"values are not exactly representable as the declared {layout.dtype}", clip_id)
    return converted.reshape(layout.shape)


def _unique_map(pairs: list[tuple[str, Any]], fail: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise fail(f"duplicate key {key!r}")
        result[key] = value
    return result


def _string_map(pairs: list[tuple[str, str | None]], fail: Any) -> dict[str, str]:
    for key, value in pairs:
        if not isinstance(value, str):
            raise fail(f"value of {key!r} is not text")
    return _unique_map(pairs, fail)


def _embedding_rows(column: pa.Array) -> list[list[tuple[str, np.ndarray]] | None]:
    """Map<string, list<float>> rows as (algorithm, numpy vector) pairs, dtype kept.

    All vectors of the batch are converted to numpy in one call and then sliced (each slice copied, so
    no clip keeps the batch's buffer alive): no per-vector Arrow scalar, no per-float Python object.
    """
    keys = column.keys.to_pylist()
    items = column.items
    offsets = column.offsets.to_pylist()
    validity = column.is_valid().to_pylist()
    bounds = _numbers(items.offsets)  # into `items.values`, which ignores any slicing of `items`
    vectors = _numbers(items.values)
    present = _present(items)
    empty = np.empty(0, dtype=items.type.value_type.to_pandas_dtype())
    rows: list[list[tuple[str, np.ndarray]] | None] = []
    for i, valid in enumerate(validity):
        if not valid:
            rows.append(None)
            continue
        rows.append(
            [
                (keys[j], vectors[bounds[j] : bounds[j + 1]].copy() if present[j] else empty.copy())
                for j in range(offsets[i], offsets[i + 1])
            ]
        )
    return rows


def _numbers(array: pa.Array) -> np.ndarray:
    """A numeric array as a numpy view of its data buffer, nulls as NaN (which validation refuses).

    Not Arrow's `to_numpy()`: it imports pandas, whose import alone costs a process about 60 MB and
    300 modules, more than the rest of a partition's reading.
    """
    dtype = np.dtype(array.type.to_pandas_dtype())
    values = np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + len(array)]
    return np.where(_present(array), values, np.nan) if array.null_count else values


def _present(array: pa.Array) -> np.ndarray:
    """Which values are not null, read off the validity bitmap (not through pandas: see `_numbers`)."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool)


def _binary_views(column: pa.Array) -> list[memoryview | None]:
    """Each value as a view into the batch's data buffer: media bytes are never copied into Python.

    A view keeps its batch's buffer alive, so memory stays bounded by the batches whose clips are
    still in flight, as with copies, minus the copies.
    """
    if column.null_count == len(column):
        return [None] * len(column)
    offsets_buffer, data_buffer = column.buffers()[1:3]
    width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=width)[column.offset : column.offset + len(column) + 1]
    # Arrow exposes signed chars; unsigned bytes compare equal to `bytes` and hash and write the same.
    data = memoryview(data_buffer).cast("B") if data_buffer is not None else memoryview(b"")
    valid = _present(column)
    return [data[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(column))]


def _window_rows(column: pa.Array) -> list[list[dict[str, Any] | None] | None]:
    """Window lists as dicts, their WebP bytes as views (see `_binary_views`), everything else as values."""
    if not pa.types.is_struct(column.type.value_type):  # a legacy or foreign shape: plain conversion
        return list(column.to_pylist())
    windows = column.flatten()  # every window of the batch, the list's own offset applied
    fields = [windows.type.field(i).name for i in range(windows.type.num_fields)]
    children = windows.flatten()  # the struct's fields, its offset applied
    plain = [name for name in fields if name != schema.WINDOW_WEBP]
    dicts = pa.StructArray.from_arrays([children[fields.index(n)] for n in plain], names=plain).to_pylist()
    if schema.WINDOW_WEBP in fields:
        for window, webp in zip(dicts, _binary_views(children[fields.index(schema.WINDOW_WEBP)]), strict=True):
            window[schema.WINDOW_WEBP] = webp
    present = _present(windows)
    flat: list[dict[str, Any] | None] = [d if present[i] else None for i, d in enumerate(dicts)]
    bounds = _numbers(column.offsets)
    first = bounds[0]
    valid = _present(column)
    return [flat[bounds[i] - first : bounds[i + 1] - first] if valid[i] else None for i in range(len(column))]
