"""Real media and real processed-video files for tests: small, deterministic, made with PyAV and Pillow."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import av
import numpy as np
from PIL import Image

from clip_assets.contract import ClipRecord, VideoInfo, Window, write_processed_video
from clip_assets.contract.identity import derive_clip_uuid

FPS = 24
SOURCE_VIDEO = "/videos/cam1/street walk.mp4"


@cache
def tiny_mp4(num_frames: int = 8, width: int = 64, height: int = 48, shade: int = 0) -> bytes:
    """An H.264 MP4 with exactly `num_frames` frames; `shade` makes distinct content."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            image = np.full((height, width, 3), (shade * 37 + i * 20) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@cache
def noise_mp4(target_bytes: int, seed: int = 0, width: int = 320, height: int = 240) -> bytes:
    """A real H.264 clip of about `target_bytes` (lossless 4:2:0 noise does not compress: 1.5 bytes a pixel)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for _ in range(max(2, target_bytes * 2 // (width * height * 3))):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@cache
def tiny_webp(shade: int = 0, frames: int = 2) -> bytes:
    images = [Image.new("RGB", (32, 24), ((shade * 50 + i * 90) % 256, 80, 160)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=250, lossless=True)
    return buffer.getvalue()


def video_info(source_video: str = SOURCE_VIDEO, num_clips: int = 3, num_chunks: int = 1) -> VideoInfo:
    return VideoInfo(
        source_video=source_video,
        width=64,
        height=48,
        framerate=float(FPS),
        num_frames=num_clips * 8,
        duration=num_clips * 8 / FPS,
        video_codec="h264",
        pixel_format="yuv420p",
        audio_codec=None,
        num_total_clips=num_clips,
        num_clip_chunks=num_chunks,
    )


def make_clips(
    num_clips: int = 3,
    *,
    source_video: str = SOURCE_VIDEO,
    filtered: Sequence[int] = (),
    clips_per_chunk: int = 0,
    algorithm: str = "cosmos-embed1",
    dim: int = 8,
) -> list[ClipRecord]:
    """Passed clips with two windows (WebP + captions) and an embedding; `filtered` rows are filtered by motion."""
    clips = []
    for i in range(num_clips):
        start, end = i * 8 / FPS, (i + 1) * 8 / FPS
        is_filtered = i in filtered
        windows = (
            []
            if is_filtered
            else [
                Window(0, 4, tiny_webp(i), {"qwen": f"clip {i} first half"}, {"qwen_lm": f"enhanced {i}"}),
                Window(4, 8, tiny_webp(i + 100), {"qwen": f"clip {i} second half"}, {}),
            ]
        )
        clips.append(
            ClipRecord(
                row=i,
                uuid=derive_clip_uuid(source_video, start, end, FPS),
                chunk_index=i // clips_per_chunk if clips_per_chunk else 0,
                span_start=start,
                span_end=end,
                filtered=is_filtered,
                filtered_by="motion" if is_filtered else None,
                mp4=tiny_mp4(8, shade=i),
                windows=windows,
                embeddings={} if is_filtered else {algorithm: np.linspace(-1, 1, dim, dtype=np.float32) * (i + 1)},
                motion_score_global_mean=0.1 if is_filtered else 3.5,
                motion_score_per_patch_min_256=0.01 if is_filtered else 0.5,
                aesthetic_score=None if is_filtered else 4.25,
            )
        )
    return clips


def write_video(
    path: Path, clips: Sequence[ClipRecord] | None = None, info: VideoInfo | None = None, **clip_options: object
) -> Path:
    clips = list(clips) if clips is not None else make_clips(**clip_options)  # type: ignore[arg-type]
    if info is None:
        chunks = max((c.chunk_index for c in clips), default=0) + 1
        source_video = str(clip_options.get("source_video", SOURCE_VIDEO))
        info = video_info(source_video, num_clips=len(clips), num_chunks=chunks)
    return write_processed_video(path, info, clips)


def clips_with_vectors(
    source_video: str,
    num_clips: int,
    seed: int,
    *,
    filtered: Sequence[int] = (),
    twins: dict[int, np.ndarray] | None = None,
    dim: int = 32,
    algorithm: str = "cosmos-embed1",
) -> list[ClipRecord]:
    """`make_clips` with an independent random vector per passed clip (so no two are alike), and planted
    near-duplicates: `twins` maps a row to a vector it copies, plus noise of 1e-3 per value."""
    rng = np.random.default_rng(seed)
    clips = make_clips(num_clips, source_video=source_video, filtered=filtered, dim=dim, algorithm=algorithm)
    for clip in clips:
        if not clip.filtered:
            clip.embeddings = {algorithm: rng.normal(size=dim).astype(np.float32)}
    for row, vector in (twins or {}).items():
        clips[row].embeddings = {algorithm: (vector + rng.normal(scale=1e-3, size=dim)).astype(np.float32)}
    return clips
