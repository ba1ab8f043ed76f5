"""Run NVIDIA NeMo Curator 1.4.0's real `ClipWriterStage` on processed-video files.

This is the reference side of the parity harness: clip-assets claims to write what NeMo's writer
writes, so we feed NeMo's own stage the very content a processed-video file holds and keep its
output tree for `compare_trees.py`. It also times the stage, so it doubles as the NeMo baseline of
the throughput benchmark.

It runs with the NeMo virtualenv's interpreter (`/tmp/nemo-venv/bin/python`), which has neither
clip_assets nor dagster installed, so it reads the Parquet file with pyarrow directly, following the
processed-video contract (docs/processed-video-format.md), instead of using the project's reader.
It does not validate like the project's reader does: feed it files that reader accepts.

Each clip chunk of each file becomes one NeMo `VideoTask` (what NeMo's transcoding stage hands
downstream), and one stage instance processes them in order after `setup()`, as a pipeline worker
would. Deliberate choices, all mirroring NeMo 1.4.0:
- `Clip.cosmos_embed1_embedding` is the `cosmos-embed1` vector, dtype and shape as stored. NeMo
  1.4.0's `Clip` has no InternVideo2 field and its writer no `iv2_*` output, so other algorithms'
  vectors are dropped (and counted in the summary).
- `extra_metadata` has no NeMo counterpart and is ignored (counted in the summary).
- A chunk index listed by the file (`num_clip_chunks`) but without rows still runs, as an empty
  chunk task; chunk 0 always runs so the video JSON is written, as NeMo does for a clip-less video.

Usage:
    /tmp/nemo-venv/bin/python benchmarks/nemo_reference.py FILE.parquet... --output DIR \
        --input-path PREFIX [--embedding-algorithm cosmos-embed1] [--caption-models m1,m2] \
        [--enhanced-caption-models m1,m2] [--no-upload-clips] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

try:
    from loguru import logger
    from nemo_curator.stages.video.io.clip_writer import ClipWriterStage
    from nemo_curator.tasks.video import Clip, ClipStats, Video, VideoMetadata, VideoTask, _Window
except ImportError as exc:  # pragma: no cover - depends on the interpreter used
    sys.exit(f"NeMo Curator is not importable ({exc}); run this with /tmp/nemo-venv/bin/python")

METADATA_KEY = b"clip_assets"
COSMOS_EMBED1 = "cosmos-embed1"
DATASET_NAME = "clip-assets-parity"
BATCH_SIZE = 64


@dataclass
class FileInfo:
    """The file-level metadata of one processed video, as NeMo's `Video` needs it."""

    path: pathlib.Path
    source_video: str
    video: dict[str, Any]
    num_total_clips: int
    num_clip_chunks: int
    # chunk index -> (num_filtered_by_motion, num_filtered_by_aesthetic); None when the file has none.
    chunk_counters: dict[int, tuple[int, int]] | None


@dataclass
class Chunk:
    """One clip chunk's NeMo clips plus the filter counts seen in its `filtered_by` column."""

    clips: list[Clip] = field(default_factory=list)
    filtered_clips: list[Clip] = field(default_factory=list)
    counted_motion: int = 0
    counted_aesthetic: int = 0


@dataclass
class Totals:
    """What the run did, for the summary line and the clips/s figure."""

    files: int = 0
    chunks: int = 0
    clips: int = 0
    filtered_clips: int = 0
    failed_chunks: int = 0
    dropped_embeddings: dict[str, int] = field(default_factory=dict)
    ignored_extra_metadata: int = 0
    stage_seconds: float = 0.0


def read_file_info(path: pathlib.Path, parquet: pq.ParquetFile) -> FileInfo:
    """Parse the `clip_assets` footer metadata (where Arrow schema metadata lands too): NeMo's `Video` fields."""
    raw = (parquet.metadata.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path}: footer metadata key 'clip_assets' is missing; not a processed-video file")
    doc = json.loads(raw.decode("utf-8"))
    if doc.get("format_version") != 1:
        raise ValueError(f"{path}: format_version {doc.get('format_version')!r} is not 1")
    counters = None
    if doc.get("chunks") is not None:
        counters = {
            int(c["index"]): (int(c.get("num_filtered_by_motion", 0)), int(c.get("num_filtered_by_aesthetic", 0)))
            for c in doc["chunks"]
        }
    return FileInfo(
        path=path,
        source_video=doc["source_video"],
        video=doc.get("video") or {},
        num_total_clips=int(doc.get("num_total_clips", 0)),
        num_clip_chunks=int(doc.get("num_clip_chunks", 0)),
        chunk_counters=counters,
    )


def derive_uuid(source_video: str, start: float, end: float, framerate: float | None) -> uuid.UUID:
    """NeMo's clipping-stage id, for rows whose `clip_uuid` is null (the contract allows that)."""
    if framerate is None:
        raise ValueError(f"{source_video}: clip_uuid is null and there is no framerate to derive it")
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{source_video}_{int(start * framerate)}_{int(end * framerate)}")


def iter_rows(parquet: pq.ParquetFile) -> Iterator[dict[str, Any]]:
    """Rows as Python values, except embeddings, which become numpy arrays of the stored float type."""
    for batch in parquet.iter_batches(batch_size=BATCH_SIZE):
        columns: dict[str, list[Any]] = {}
        for name in batch.schema.names:
            column = batch.column(name)
            if name == "embeddings":
                columns[name] = embedding_rows(column)
            else:
                columns[name] = column.to_pylist()
        for i in range(batch.num_rows):
            yield {name: values[i] for name, values in columns.items()}


def embedding_rows(column: pa.Array) -> list[dict[str, np.ndarray] | None]:
    """`map<string, list<float>>` rows as {algorithm: vector}; float32 stays float32, as NeMo would see it."""
    dtype = np.dtype(column.type.item_type.value_type.to_pandas_dtype())
    rows: list[dict[str, np.ndarray] | None] = []
    for pairs in column.to_pylist():
        if pairs is None:
            rows.append(None)
            continue
        rows.append({key: np.asarray(values if values is not None else [], dtype=dtype) for key, values in pairs})
    return rows


def to_nemo_clip(row: dict[str, Any], info: FileInfo, totals: Totals) -> Clip:
    """One contract row as the `Clip` NeMo's upstream stages would have left for the writer."""
    start, end = float(row["span_start"]), float(row["span_end"])
    raw_id = row.get("clip_uuid")
    clip_id = uuid.UUID(raw_id) if raw_id is not None else derive_uuid(info.source_video, start, end, framerate(info))
    windows = [
        _Window(
            start_frame=int(w["start_frame"]),
            end_frame=int(w["end_frame"]),
            caption=dict(w.get("captions") or []),
            enhanced_caption=dict(w.get("enhanced_captions") or []),
            webp_bytes=w.get("webp"),
        )
        for w in row.get("windows") or []
    ]
    embeddings = row.get("embeddings") or {}
    for algorithm in embeddings:
        if algorithm != COSMOS_EMBED1:
            totals.dropped_embeddings[algorithm] = totals.dropped_embeddings.get(algorithm, 0) + 1
    if row.get("extra_metadata") is not None:
        totals.ignored_extra_metadata += 1
    return Clip(
        uuid=clip_id,
        source_video=info.source_video,
        span=(start, end),
        buffer=row.get("mp4"),
        windows=windows,
        cosmos_embed1_embedding=embeddings.get(COSMOS_EMBED1),
        motion_score_global_mean=row.get("motion_score_global_mean"),
        motion_score_per_patch_min_256=row.get("motion_score_per_patch_min_256"),
        aesthetic_score=row.get("aesthetic_score"),
        errors=dict(row.get("errors") or []),
    )


def framerate(info: FileInfo) -> float | None:
    value = info.video.get("framerate")
    return float(value) if value is not None else None


def read_chunks(info: FileInfo, parquet: pq.ParquetFile, totals: Totals) -> dict[int, Chunk]:
    """Group the file's clips by chunk index, keeping file order inside each chunk.

    The whole file is held in memory: NeMo holds a chunk's clip bytes in memory too, and this is a
    reference harness, not the product.
    """
    chunks: dict[int, Chunk] = {}
    for row in iter_rows(parquet):
        chunk = chunks.setdefault(int(row["chunk_index"]), Chunk())
        clip = to_nemo_clip(row, info, totals)
        if row["filtered"]:
            chunk.filtered_clips.append(clip)
            reason = row.get("filtered_by")
            chunk.counted_motion += reason == "motion"
            chunk.counted_aesthetic += reason == "aesthetic"
        else:
            chunk.clips.append(clip)
    for index in {0, *range(info.num_clip_chunks)}:
        chunks.setdefault(index, Chunk())
    return dict(sorted(chunks.items()))


def make_task(info: FileInfo, index: int, chunk: Chunk) -> VideoTask:
    """The `VideoTask` NeMo's pipeline hands the writer for one clip chunk."""
    if info.chunk_counters is not None:
        motion, aesthetic = info.chunk_counters.get(index, (0, 0))
    else:
        motion, aesthetic = chunk.counted_motion, chunk.counted_aesthetic
    v = info.video
    video = Video(
        input_video=pathlib.Path(info.source_video),
        metadata=VideoMetadata(
            height=v.get("height"),
            width=v.get("width"),
            framerate=v.get("framerate"),
            num_frames=v.get("num_frames"),
            duration=v.get("duration"),
            video_codec=v.get("video_codec"),
            pixel_format=v.get("pixel_format"),
            audio_codec=v.get("audio_codec"),
        ),
        clips=chunk.clips,
        filtered_clips=chunk.filtered_clips,
        num_total_clips=info.num_total_clips,
        num_clip_chunks=info.num_clip_chunks,
        clip_chunk_index=index,
        clip_stats=ClipStats(num_filtered_by_motion=motion, num_filtered_by_aesthetic=aesthetic),
    )
    return VideoTask(dataset_name=DATASET_NAME, data=video)


def caption_models_in_files(paths: Sequence[pathlib.Path]) -> tuple[list[str], list[str]]:
    """Caption and enhanced-caption models in order of first appearance across the files.

    NeMo needs explicit ordered lists (its default None crashes on the first window); this is the
    order clip-assets uses when its lists are unset and every window lists models in the same order.
    """
    captions: dict[str, None] = {}
    enhanced: dict[str, None] = {}
    for path in paths:
        parquet = pq.ParquetFile(path)
        if "windows" not in parquet.schema_arrow.names:
            continue
        for batch in parquet.iter_batches(batch_size=BATCH_SIZE, columns=["windows"]):
            for windows in batch.column("windows").to_pylist():
                for window in windows or []:
                    captions.update(dict.fromkeys(k for k, _ in window.get("captions") or []))
                    enhanced.update(dict.fromkeys(k for k, _ in window.get("enhanced_captions") or []))
    return list(captions), list(enhanced)


def model_list(text: str | None) -> list[str] | None:
    return None if text is None else [m.strip() for m in text.split(",") if m.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=pathlib.Path, help="processed-video Parquet files")
    parser.add_argument("--output", required=True, help="NeMo's output_path (written into clip_location as given)")
    parser.add_argument("--input-path", required=True, help="NeMo's input_path: prefix stripped from source_video")
    parser.add_argument("--embedding-algorithm", default=COSMOS_EMBED1)
    parser.add_argument("--caption-models", help="comma-separated, ordered; default: models in the files")
    parser.add_argument("--enhanced-caption-models", help="comma-separated, ordered; default: models in the files")
    parser.add_argument("--no-upload-clips", action="store_true", help="NeMo's upload_clips=False")
    parser.add_argument("--dry-run", action="store_true", help="NeMo's dry_run=True")
    parser.add_argument("--max-workers", type=int, default=6, help="NeMo's writer thread pool size")
    parser.add_argument(
        "--allow-existing",
        action="store_true",
        help="write into a non-empty output folder (NeMo never overwrites, so old files would stay)",
    )
    return parser.parse_args(argv)


def quiet_nemo_logs() -> None:
    """Keep NeMo's warnings and errors, drop the per-task 'Video ... does not exist' noise.

    The source videos are not on this machine; the writer never reads them.
    """
    logger.remove()
    logger.add(
        sys.stderr,
        level="WARNING",
        filter=lambda record: not record["message"].endswith("does not exist"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_nemo_logs()
    if shutil.which("ffprobe") is None:
        print("ffprobe not found: NeMo probes every clip with it (apt-get install -y ffmpeg)", file=sys.stderr)
        return 2
    output = pathlib.Path(args.output)
    if output.exists() and any(output.iterdir()) and not args.allow_existing:
        print(
            f"{output} is not empty; NeMo never overwrites, so stale files would stay (--allow-existing)",
            file=sys.stderr,
        )
        return 2

    caption_models = model_list(args.caption_models)
    enhanced_models = model_list(args.enhanced_caption_models)
    if caption_models is None or enhanced_models is None:
        found_captions, found_enhanced = caption_models_in_files(args.files)
        caption_models = found_captions if caption_models is None else caption_models
        enhanced_models = found_enhanced if enhanced_models is None else enhanced_models

    stage = ClipWriterStage(
        output_path=args.output,
        input_path=args.input_path,
        upload_clips=not args.no_upload_clips,
        dry_run=args.dry_run,
        generate_embeddings=True,
        generate_previews=True,
        generate_captions=True,
        embedding_algorithm=args.embedding_algorithm,
        caption_models=caption_models,
        enhanced_caption_models=enhanced_models,
        max_workers=args.max_workers,
    )
    print(
        f"ClipWriterStage output_path={args.output!r} input_path={args.input_path!r} "
        f"upload_clips={stage.upload_clips} dry_run={stage.dry_run} "
        f"embedding_algorithm={stage.embedding_algorithm!r} caption_models={caption_models} "
        f"enhanced_caption_models={enhanced_models} max_workers={stage.max_workers}"
    )

    totals = Totals()
    wall_start = time.perf_counter()
    stage_start = time.perf_counter()
    stage.setup()
    totals.stage_seconds += time.perf_counter() - stage_start
    for path in args.files:
        with pq.ParquetFile(path) as parquet:
            info = read_file_info(path, parquet)
            chunks = read_chunks(info, parquet, totals)
        totals.files += 1
        for index, chunk in chunks.items():
            task = make_task(info, index, chunk)
            totals.chunks += 1
            totals.clips += len(chunk.clips)
            totals.filtered_clips += len(chunk.filtered_clips)
            stage_start = time.perf_counter()
            try:
                stage.process(task)
            except Exception as exc:  # report NeMo's failure per chunk, as a pipeline would log it
                totals.failed_chunks += 1
                print(f"FAILED {path} chunk {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                totals.stage_seconds += time.perf_counter() - stage_start
    wall = time.perf_counter() - wall_start

    all_clips = totals.clips + totals.filtered_clips
    print(
        f"{totals.files} files, {totals.chunks} chunks, {totals.clips} passed + {totals.filtered_clips} filtered clips"
        f"{f', {totals.failed_chunks} chunks FAILED' if totals.failed_chunks else ''}"
    )
    print(f"wall time {wall:.3f} s, {all_clips / wall if wall else 0.0:.1f} clips/s (reading included)")
    print(
        f"stage time {totals.stage_seconds:.3f} s, "
        f"{all_clips / totals.stage_seconds if totals.stage_seconds else 0.0:.1f} clips/s (setup + process only)"
    )
    for algorithm, count in sorted(totals.dropped_embeddings.items()):
        print(f"note: {count} '{algorithm}' embeddings dropped: NeMo 1.4.0's Clip only carries cosmos-embed1")
    if totals.ignored_extra_metadata:
        print(f"note: extra_metadata of {totals.ignored_extra_metadata} clips ignored: NeMo has no such field")
    print(f"output: {output}")
    return 1 if totals.failed_chunks else 0


if __name__ == "__main__":
    sys.exit(main())
