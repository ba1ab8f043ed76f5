"""The NeMo side of the hand-off tests, run by the NeMo Curator virtualenv's interpreter (support/nemo.py).

Real NeMo Curator 1.4.0 objects and stages only: `VideoTask`s built field by field, NeMo's own
`ClipWriterStage`, a real `Pipeline` of NeMo's CPU stages under its `RayActorPoolExecutor`, and the
hand-off stage, `clip_assets.nemo.ProcessedVideoWriterStage`. Each command prints one JSON line the
test reads; a failed check exits non-zero with the reason.

    python -m clip_assets_tests.support.nemo_side nemo-writer OUTPUT             # the tasks through ClipWriterStage
    python -m clip_assets_tests.support.nemo_side handoff INBOX [--chunks 1,0] [--no-others]  # through the hand-off
    python -m clip_assets_tests.support.nemo_side roundtrip                      # tasks -> rows -> file -> tasks
    python -m clip_assets_tests.support.nemo_side pipeline VIDEOS (--output DIR | --inbox URL)
    python -m clip_assets_tests.support.nemo_side write-chunk INBOX MIB INDEX    # one chunk, MIB large (to be killed)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from loguru import logger
from nemo_curator.stages.video.io.clip_writer import ClipWriterStage
from nemo_curator.tasks.video import Clip, ClipStats, Video, VideoMetadata, VideoTask, _Window

from clip_assets.contract import ProcessedVideoReader, processed_video_bytes
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.nemo import ProcessedVideoWriterStage
from clip_assets.nemo.mapping import chunk_rows, video_tasks
from clip_assets.storage.s3 import S3Connection
from clip_assets_tests.support.factories import FPS, noise_mp4, tiny_mp4, tiny_webp

INPUT_PATH = "/videos"
CHUNKED_VIDEO = "/videos/cam 1/straße café.mp4"  # non-ASCII and spaces, two chunks
SHORT_VIDEO = "/videos/short one.mp4"  # one chunk of one
EMPTY_VIDEO = "/videos/empty.mp4"  # no clips: NeMo hands the writer chunk 0 of 0
CAPTION_MODELS = ["qwen", "nemotron"]
ENHANCED_CAPTION_MODELS = ["qwen_lm"]
EMBEDDING_DIM = 768


def metadata(num_clips: int) -> VideoMetadata:
    return VideoMetadata(
        size=123_456,
        height=48,
        width=64,
        framerate=float(FPS),
        num_frames=num_clips * 8,
        duration=num_clips * 8 / FPS,
        video_codec="h264",
        pixel_format="yuv420p",
        audio_codec="aac",
        bit_rate_k=900,
    )


def cosmos_embedding(seed: int) -> np.ndarray:
    """What NeMo's Cosmos-Embed1 stage leaves on a clip: float16, shape (1, 768)."""
    return (np.linspace(-1, 1, EMBEDDING_DIM, dtype=np.float32) * (seed + 1) / 7).astype(np.float16).reshape(1, -1)


def clip(video: str, number: int, **fields: Any) -> Clip:
    start, end = number * 8 / FPS, (number + 1) * 8 / FPS
    return Clip(
        uuid=uuid.UUID(derive_clip_uuid(video, start, end, FPS)),
        source_video=video,
        span=(start, end),
        **fields,
    )


def captioned_windows(number: int, *, webp: bool = True) -> list[_Window]:
    return [
        _Window(
            0,
            3,
            webp_bytes=tiny_webp(number) if webp else None,
            caption={"qwen": f"clip {number}: a street", "nemotron": f"clip {number}, nemotron's words"},
            enhanced_caption={"qwen_lm": f"clip {number}, enhanced"},
        ),
        _Window(4, 7, webp_bytes=tiny_webp(number + 50), caption={"nemotron": f"clip {number} later"}),
    ]


def chunked_video_tasks() -> list[VideoTask]:
    """One video in two chunks, with every field NeMo's writer reads, passed and filtered clips."""
    video = CHUNKED_VIDEO
    chunk0 = Video(
        input_video=pathlib.Path(video),
        metadata=metadata(6),
        clips=[
            clip(
                video,
                0,
                buffer=tiny_mp4(8, shade=1),
                windows=captioned_windows(0),
                cosmos_embed1_embedding=cosmos_embedding(0),
                motion_score_global_mean=3.25,
                motion_score_per_patch_min_256=0.5,
                aesthetic_score=5.125,
            ),
            clip(  # a window without WebP, no embedding, an error with its message
                video,
                1,
                buffer=tiny_mp4(8, shade=2),
                windows=captioned_windows(1, webp=False),
                motion_score_global_mean=2.0,
                motion_score_per_patch_min_256=0.25,
                errors={"cosmos_embed1_embedding": "failed"},
            ),
            clip(  # no MP4: transcoding failed
                video,
                2,
                errors={"transcode": "ffmpeg exited with 1: Invalid data found when processing input"},
            ),
        ],
        filtered_clips=[
            clip(
                video, 3, buffer=tiny_mp4(8, shade=3), motion_score_global_mean=0.01, motion_score_per_patch_min_256=0.0
            )
        ],
        num_total_clips=6,
        num_clip_chunks=2,
        clip_chunk_index=0,
        clip_stats=ClipStats(num_filtered_by_motion=1),
    )
    chunk1 = Video(
        input_video=pathlib.Path(video),
        metadata=metadata(6),
        clips=[
            clip(
                video,
                4,
                buffer=tiny_mp4(8, shade=4),
                windows=captioned_windows(4),
                cosmos_embed1_embedding=cosmos_embedding(4),
                aesthetic_score=4.5,
            )
        ],
        filtered_clips=[clip(video, 5, buffer=tiny_mp4(8, shade=5), aesthetic_score=1.5)],
        num_total_clips=6,
        num_clip_chunks=2,
        clip_chunk_index=1,
        clip_stats=ClipStats(num_filtered_by_aesthetic=1),
    )
    return [VideoTask(dataset_name="handoff", data=chunk0), VideoTask(dataset_name="handoff", data=chunk1)]


def short_video_task() -> VideoTask:
    """One chunk of one; its clip also has an InternVideo2 vector (1.4.0's writer has no output for it)."""
    only = clip(
        SHORT_VIDEO,
        0,
        buffer=tiny_mp4(8, shade=7),
        windows=[_Window(0, 7, webp_bytes=tiny_webp(7), caption={"qwen": "a short one"})],
        cosmos_embed1_embedding=cosmos_embedding(7),
    )
    only.intern_video_2_embedding = np.linspace(0, 1, 512, dtype=np.float32)
    video = Video(
        input_video=pathlib.Path(SHORT_VIDEO),
        metadata=metadata(1),
        clips=[only],
        num_total_clips=1,
        num_clip_chunks=1,
        clip_chunk_index=0,
    )
    return VideoTask(dataset_name="handoff", data=video)


def empty_video_task() -> VideoTask:
    return VideoTask(dataset_name="handoff", data=Video(input_video=pathlib.Path(EMPTY_VIDEO), metadata=metadata(0)))


def all_tasks() -> list[VideoTask]:
    return [*chunked_video_tasks(), short_video_task(), empty_video_task()]


def nemo_writer(output: str) -> ClipWriterStage:
    stage = ClipWriterStage(
        output_path=output,
        input_path=INPUT_PATH,
        upload_clips=True,
        dry_run=False,
        generate_embeddings=True,
        generate_previews=True,
        generate_captions=True,
        embedding_algorithm="cosmos-embed1",
        caption_models=CAPTION_MODELS,
        enhanced_caption_models=ENHANCED_CAPTION_MODELS,
    )
    stage.setup()
    return stage


def s3_connection() -> S3Connection | None:
    """The test endpoint, if the test gives one (credentials come from the environment, the AWS chain)."""
    endpoint = os.environ.get("HANDOFF_S3_ENDPOINT")
    return S3Connection(endpoint_url=endpoint, addressing_style="path") if endpoint else None


def buffers_left(task: VideoTask) -> int:
    video = task.data
    count = 0
    for c in (*video.clips, *video.filtered_clips):
        count += c.buffer is not None
        count += c.cosmos_embed1_embedding is not None
        count += getattr(c, "intern_video_2_embedding", None) is not None
        count += sum(w.webp_bytes is not None or w.mp4_bytes is not None for w in c.windows)
    return count


def run_handoff(inbox: str, chunks: Sequence[int], *, others: bool) -> dict[str, Any]:
    """The other videos' tasks (unless not `others`), then the chunked video's `chunks`, in that order."""
    stage = ProcessedVideoWriterStage(inbox=inbox, input_path=INPUT_PATH, s3=s3_connection())
    stage.setup()
    chunked = chunked_video_tasks()
    tasks = [*([short_video_task(), empty_video_task()] if others else []), *(chunked[i] for i in chunks)]
    returned = [stage.process(task) for task in tasks]
    return {
        "written": [f"{t.data.input_video.name}#{t.data.clip_chunk_index}" for t in returned],
        "buffers_left": sum(buffers_left(t) for t in returned),
        "same_tasks": all(a is b for a, b in zip(tasks, returned, strict=True)),
    }


def describe(task: VideoTask) -> dict[str, Any]:
    """Every field NeMo's writer reads, as comparable values (arrays with dtype and shape)."""
    video = task.data

    def array(value: np.ndarray | None) -> Any:
        return None if value is None else [str(value.dtype), list(value.shape), value.tobytes().hex()]

    def one(c: Clip) -> dict[str, Any]:
        return {
            "uuid": str(c.uuid),
            "source_video": str(c.source_video),
            "span": list(c.span),
            "buffer": None if c.buffer is None else len(c.buffer),
            "windows": [
                [w.start_frame, w.end_frame, w.webp_bytes, dict(w.caption), dict(w.enhanced_caption)] for w in c.windows
            ],
            "cosmos_embed1_embedding": array(c.cosmos_embed1_embedding),
            "scores": [c.motion_score_global_mean, c.motion_score_per_patch_min_256, c.aesthetic_score],
            "errors": dict(c.errors),
        }

    m = video.metadata
    return {
        "input_video": video.input_video.as_posix(),
        "metadata": [
            m.height,
            m.width,
            m.framerate,
            m.num_frames,
            m.duration,
            m.video_codec,
            m.pixel_format,
            m.audio_codec,
        ],
        "counts": [video.num_total_clips, video.num_clip_chunks, video.clip_chunk_index],
        "clip_stats": [video.clip_stats.num_filtered_by_motion, video.clip_stats.num_filtered_by_aesthetic],
        "clips": [one(c) for c in video.clips],
        "filtered_clips": [one(c) for c in video.filtered_clips],
    }


def roundtrip() -> dict[str, Any]:
    """tasks -> rows -> one processed-video file each -> read back -> tasks: every field the same."""
    checked = 0
    for task in all_tasks():
        info, clips = chunk_rows(task)
        data = processed_video_bytes(info, clips)
        with ProcessedVideoReader(io.BytesIO(data), "roundtrip.parquet") as reader:
            back = list(reader.iter_clips())
            read_info = reader.info
        iv2 = [c.embeddings.get("internvideo2") for c in back]
        (again,) = video_tasks(read_info, back)  # a chunk file is its own chunk, a single file chunk 0 here
        original, restored = describe(task), describe(again)
        if original != restored:
            raise SystemExit(f"round trip differs for {task.data.input_video}: {original} != {restored}")
        for before, after in zip((*task.data.clips, *task.data.filtered_clips), iv2, strict=True):
            expected = getattr(before, "intern_video_2_embedding", None)
            if (expected is None) != (after is None) or (
                expected is not None and (expected.dtype != after.dtype or not np.array_equal(expected, after))
            ):
                raise SystemExit(f"InternVideo2 vector of {before.uuid} not carried: {expected} -> {after}")
        checked += 1
    return {"tasks": checked, "refused": refused()}


def refused() -> str:
    """A task whose video is not below `input_path` fails before anything is written, naming the video."""
    import tempfile

    from clip_assets.nemo.mapping import MappingError

    outside = short_video_task()
    outside.data.input_video = pathlib.Path("/elsewhere/x.mp4")
    with tempfile.TemporaryDirectory() as inbox:
        stage = ProcessedVideoWriterStage(inbox=inbox, input_path=INPUT_PATH)
        try:
            stage.process(outside)
        except MappingError as exc:
            if any(pathlib.Path(inbox).rglob("*.parquet")) or outside.data.clips[0].buffer is None:
                raise SystemExit("a refused task wrote a file or lost its buffers") from None
            return str(exc)
    raise SystemExit("a task outside input_path was written")


def real_pipeline(videos: str, output: str | None, inbox: str | None, executor: str = "actor_pool") -> dict[str, Any]:
    """NeMo's own CPU stages under NeMo's own executor, ending in its writer or in the hand-off.

    Ray's memory monitor kills workers when the whole machine nears its limit, whoever uses the
    memory; on a shared test machine that is other processes, so it is off here (the pipeline itself
    needs a few hundred MB).
    """
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    from nemo_curator.backends.ray_actor_pool import RayActorPoolExecutor
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.video.clipping.clip_extraction_stages import (
        ClipTranscodingStage,
        FixedStrideExtractorStage,
    )
    from nemo_curator.stages.video.io.video_reader import VideoReader

    if output is not None:
        sink = ClipWriterStage(
            output_path=output,
            input_path=videos,
            upload_clips=True,
            dry_run=False,
            generate_embeddings=False,
            generate_previews=False,
            generate_captions=False,
            caption_models=[],
            enhanced_caption_models=[],
        )
    else:
        assert inbox is not None
        sink = ProcessedVideoWriterStage(inbox=inbox, input_path=videos, s3=s3_connection())
    stages = [
        VideoReader(input_video_path=videos, video_limit=None, verbose=False),
        # Overlapping 3 s clips every 0.5 s: their whole seconds pass the 8 s chunk budget, so 2 chunks.
        FixedStrideExtractorStage(clip_len_s=3.0, clip_stride_s=0.5, min_clip_length_s=0.5, limit_clips=0),
        # Debian's ffmpeg has no libopenh264; NeMo's CPU encoder is libvpx-vp9. 6 CPUs by default: 1 here.
        ClipTranscodingStage(
            encoder="libvpx-vp9",
            num_cpus_per_worker=1.0,
            encoder_threads=1,
            encode_batch_size=16,
            num_clips_per_chunk=1,
        ),
        sink,
    ]
    pipeline = Pipeline(name="handoff_test", description="NeMo CPU video split", stages=stages)
    started = time.perf_counter()
    if executor == "xenna":  # NeMo's default executor; batch mode fits two cores (streaming needs a CPU per stage)
        from nemo_curator.backends.xenna import XennaExecutor

        results = pipeline.run(XennaExecutor(config={"execution_mode": "batch"})) or []
    else:
        results = pipeline.run(RayActorPoolExecutor(show_progress=False)) or []
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "tasks": [[t.data.input_video.name, t.data.clip_chunk_index, t.data.num_clip_chunks] for t in results],
        "buffers_left": sum(buffers_left(t) for t in results),
    }


def write_chunk(inbox: str, mib: int, index: int) -> dict[str, Any]:
    """Chunk `index` of a two-chunk video, its clip `mib` MiB large (a tiny one for 0), for the test that
    kills the writer part-way through a chunk."""
    buffer = noise_mp4(mib * 1024 * 1024) if mib else tiny_mp4(8, shade=index)
    video = Video(
        input_video=pathlib.Path("/videos/big.mp4"),
        metadata=metadata(2),
        clips=[clip("/videos/big.mp4", index, buffer=buffer)],
        num_total_clips=2,
        num_clip_chunks=2,
        clip_chunk_index=index,
    )
    stage = ProcessedVideoWriterStage(inbox=inbox, input_path=INPUT_PATH, s3=s3_connection())
    stage.setup()
    print(json.dumps({"writing": True}), flush=True)
    stage.process(VideoTask(dataset_name="handoff", data=video))
    return {"written": True}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("nemo-writer").add_argument("output")
    handoff = commands.add_parser("handoff")
    handoff.add_argument("inbox")
    handoff.add_argument("--chunks", default="1,0", help="the chunked video's chunks to deliver, in order")
    handoff.add_argument("--no-others", action="store_true", help="deliver only the chunked video's chunks")
    commands.add_parser("roundtrip")
    pipeline = commands.add_parser("pipeline")
    pipeline.add_argument("videos")
    pipeline.add_argument("--output")
    pipeline.add_argument("--inbox")
    pipeline.add_argument("--executor", choices=["actor_pool", "xenna"], default="actor_pool")
    chunk = commands.add_parser("write-chunk")
    chunk.add_argument("inbox")
    chunk.add_argument("mib", type=int)
    chunk.add_argument("index", type=int)
    args = parser.parse_args(argv)
    # The videos of the built tasks are not on this machine (the writers never read them): keep NeMo's
    # warnings and errors, not the per-task "Video ... does not exist".
    logger.remove()
    logger.add(sys.stderr, level="WARNING", filter=lambda record: not record["message"].endswith("does not exist"))

    if args.command == "nemo-writer":
        stage = nemo_writer(args.output)
        for task in all_tasks():
            stage.process(task)
        result: dict[str, Any] = {"tasks": len(all_tasks())}
    elif args.command == "handoff":
        result = run_handoff(args.inbox, [int(c) for c in args.chunks.split(",") if c], others=not args.no_others)
    elif args.command == "roundtrip":
        result = roundtrip()
    elif args.command == "pipeline":
        result = real_pipeline(args.videos, args.output, args.inbox, args.executor)
    else:
        result = write_chunk(args.inbox, args.mib, args.index)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
