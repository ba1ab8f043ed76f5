"""Run NVIDIA NeMo Curator 1.4.0's real `ClipWriterStage` on processed-video files.

This is the reference side of the parity harness: clip-assets claims to write what NeMo's writer
writes, so we feed NeMo's own stage the very content a processed-video file holds and keep its
output tree for `compare_trees.py`. It also times the stage, so it doubles as the NeMo baseline of
the throughput benchmark.

It runs with the interpreter of a NeMo virtualenv made by the README's install command (NeMo Curator
with --no-deps next to clip-assets' `nemo` extra), so it reads files with clip-assets' own reader
(format 1 and 2, chunk files included, validated as the engine validates them) and turns them into
NeMo `VideoTask`s with `clip_assets.nemo.mapping.video_tasks`, the same rules the hand-off stage
inverts. Each clip chunk becomes one `VideoTask` (what NeMo's transcoding stage hands downstream), and
one stage instance processes them in order after `setup()`, as a pipeline worker would:
- `Clip.cosmos_embed1_embedding` is the `cosmos-embed1` vector, dtype and shape as declared. NeMo
  1.4.0's `Clip` has no InternVideo2 field and its writer no `iv2_*` output, so other algorithms'
  vectors are dropped (and counted in the summary).
- `extra_metadata` has no NeMo counterpart and is ignored (counted in the summary).
- A chunk index listed by the file (`num_clip_chunks`) but without rows still runs, as an empty
  chunk task; chunk 0 always runs so the video JSON is written, as NeMo does for a clip-less video.
  A chunk file runs as its own chunk only.

Usage:
    NEMO_VENV/bin/python benchmarks/nemo_reference.py FILE.parquet... --output DIR \
        --input-path PREFIX [--embedding-algorithm cosmos-embed1] [--caption-models m1,m2] \
        [--enhanced-caption-models m1,m2] [--no-upload-clips] [--dry-run]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

try:
    from loguru import logger
    from nemo_curator.stages.video.io.clip_writer import ClipWriterStage

    from clip_assets.contract import ClipRecord, ProcessedVideoReader, VideoInfo, schema
    from clip_assets.nemo.mapping import COSMOS_EMBED1, video_tasks
except ImportError as exc:  # pragma: no cover - depends on the interpreter used
    sys.exit(f"NeMo Curator or the hand-off is not importable ({exc}); use a NeMo venv made as the README says")

DATASET_NAME = "clip-assets-parity"


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


def read_video(path: pathlib.Path, totals: Totals) -> tuple[VideoInfo, list[ClipRecord]]:
    """The whole file, checked by clip-assets' reader. NeMo holds a chunk's clip bytes in memory too,
    and this is a reference harness, not the product."""
    with ProcessedVideoReader(str(path), str(path)) as reader:
        clips = list(reader.iter_clips())
        info = reader.info
    for clip in clips:
        for algorithm in clip.embeddings:
            if algorithm != COSMOS_EMBED1:
                totals.dropped_embeddings[algorithm] = totals.dropped_embeddings.get(algorithm, 0) + 1
        totals.ignored_extra_metadata += clip.extra_metadata is not None
    return info, clips


def caption_models_in_files(paths: Sequence[pathlib.Path]) -> tuple[list[str], list[str]]:
    """Caption and enhanced-caption models in order of first appearance across the files.

    NeMo needs explicit ordered lists (its default None crashes on the first window); this is the
    order clip-assets uses when its lists are unset and every window lists models in the same order.
    Only the windows are read (not their WebP bytes).
    """
    captions: dict[str, None] = {}
    enhanced: dict[str, None] = {}
    for path in paths:
        with ProcessedVideoReader(str(path), str(path)) as reader:
            for clip in reader.iter_clips({schema.WINDOWS}):
                for window in clip.windows:
                    captions.update(dict.fromkeys(window.captions))
                    enhanced.update(dict.fromkeys(window.enhanced_captions))
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
        info, clips = read_video(path, totals)
        totals.files += 1
        for task in video_tasks(info, clips, DATASET_NAME):
            index = task.data.clip_chunk_index
            totals.chunks += 1
            totals.clips += len(task.data.clips)
            totals.filtered_clips += len(task.data.filtered_clips)
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
