"""The inputs every benchmark runs on, generated in a temp dir: real, distinct MP4s and real WebPs.

Clips are one real H.264 encoding (lossless noise, so it does not compress) made distinct per clip by
overwriting 8 bytes of coded picture data: demuxing and probing see the same valid file, hashes and
Parquet see different bytes (real clips are never identical, and Parquet would dictionary-encode equal
values). Previews are real animated WebPs, each encoded from its own seed.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clip_assets.contract import ClipRecord, VideoInfo, Window, write_processed_video
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.media.probe import probe_mp4
from clip_assets_tests.support.factories import make_clips, noise_mp4, write_video

FPS = 24
INPUT_PATH = "/videos"
EMBEDDING_DIM = 768
MB = 1_000_000


@dataclass(frozen=True)
class Workload:
    """`videos` processed videos of `clips` clips each, every clip about `clip_bytes` of MP4 and two WebP windows."""

    name: str
    videos: int
    clips: int
    clip_bytes: int
    # Frame size of the noise clip: small clips need small frames (at least two frames are encoded).
    width: int = 320
    height: int = 240

    @property
    def description(self) -> str:
        size = f"{self.clip_bytes / MB:g} MB" if self.clip_bytes >= MB else f"{self.clip_bytes / 1000:g} KB"
        return f"{self.name}: {self.videos} videos x {self.clips} clips of {size}"

    @property
    def total_clips(self) -> int:
        return self.videos * self.clips


W1 = Workload("W1", videos=20, clips=40, clip_bytes=1 * MB)
W2 = Workload("W2", videos=200, clips=5, clip_bytes=50_000, width=96, height=64)
W1_QUICK = Workload("W1", videos=2, clips=10, clip_bytes=1 * MB)
# 26 videos: two runs of a batched backfill, so the smoke run covers ranges too.
W2_QUICK = Workload("W2", videos=26, clips=2, clip_bytes=50_000, width=96, height=64)


@functools.cache
def clip_template(target_bytes: int, width: int, height: int) -> bytes:
    """A real H.264 clip of about `target_bytes`: the factory's noise clip, its frame count calibrated once."""
    first = noise_mp4(target_bytes, 0, width, height)
    return noise_mp4(max(1, target_bytes * target_bytes // len(first)), 0, width, height)


def distinct(mp4: bytes, seed: int) -> bytes:
    """A copy whose coded picture data differs; the container, and so demuxing and probing, are unchanged."""
    payload = mp4.index(b"mdat") + 64
    return mp4[:payload] + seed.to_bytes(8, "little") + mp4[payload + 8 :]


def preview_webp(seed: int, width: int = 320, height: int = 240) -> bytes:
    """A real two-frame animated WebP of smooth content (about 20 KB at 320x240, like a real preview)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    first = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    frames = [first, first.rotate(7)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=500, quality=50)
    return buffer.getvalue()


@functools.cache
def frames_of(mp4: bytes) -> int:
    return probe_mp4(mp4).num_frames


def clip_record(source_video: str, index: int, mp4: bytes, seed: int, frames: int) -> ClipRecord:
    """A passed clip with two preview windows splitting its `frames`, captions, an embedding and scores."""
    start, end = index * 2.0, index * 2.0 + 2.0
    rng = np.random.default_rng(seed)
    half = frames // 2
    return ClipRecord(
        row=index,
        uuid=derive_clip_uuid(source_video, start, end, FPS),
        chunk_index=0,
        span_start=start,
        span_end=end,
        filtered=False,
        mp4=mp4,
        windows=[
            Window(0, half, preview_webp(2 * seed), {"qwen": f"clip {seed}, first half"}),
            Window(half, frames, preview_webp(2 * seed + 1), {"qwen": f"clip {seed}, second half"}),
        ],
        embeddings={"cosmos-embed1": rng.standard_normal(EMBEDDING_DIM).astype(np.float32)},
        motion_score_global_mean=float(rng.uniform(1, 5)),
        motion_score_per_patch_min_256=float(rng.uniform(0, 1)),
        aesthetic_score=float(rng.uniform(3, 6)),
    )


def video_info(source_video: str, clips: int) -> VideoInfo:
    return VideoInfo(source_video, 320, 240, float(FPS), clips * 48, clips * 2.0, "h264", "yuv420p", None, clips, 1)


def write_video_file(path: Path, source_video: str, clips: int, template: bytes, first_seed: int) -> None:
    """One processed video, streamed: at most one row group of clips is in memory."""

    frames = frames_of(template)

    def records() -> Iterator[ClipRecord]:
        for index in range(clips):
            seed = first_seed + index
            yield clip_record(source_video, index, distinct(template, seed), seed, frames)

    write_processed_video(path, video_info(source_video, clips), records())


def build_inbox(workload: Workload, inbox: Path) -> list[str]:
    """The workload's processed videos in `inbox`; returns their partition keys, sorted."""
    template = clip_template(workload.clip_bytes, workload.width, workload.height)
    keys = []
    for video in range(workload.videos):
        name = f"v{video:04d}.mp4"
        write_video_file(inbox / f"{name}.parquet", f"{INPUT_PATH}/{name}", workload.clips, template, video * 10_000)
        keys.append(name)
    return sorted(keys)


def build_big_video(inbox: Path, megabytes: int) -> str:
    """One processed video holding about `megabytes` MB of 1 MB clips; returns its partition key."""
    name = f"big-{megabytes}mb.mp4"
    template = clip_template(MB, 320, 240)
    clips = max(1, megabytes * MB // len(template))
    write_video_file(inbox / f"{name}.parquet", f"{INPUT_PATH}/{name}", clips, template, 0)
    return name


def build_tiny_inbox(inbox: Path, count: int, prefix: str = "t") -> list[str]:
    """`count` tiny valid processed videos (two 8-frame clips each, as the tests use): Dagster's per-partition cost."""
    keys = []
    for index in range(count):
        name = f"{prefix}{index:05d}.mp4"
        source = f"{INPUT_PATH}/{name}"
        write_video(inbox / f"{name}.parquet", make_clips(2, source_video=source), source_video=source)
        keys.append(name)
    return sorted(keys)


def build_wide_inbox(inbox: Path, count: int, per_folder: int = 100) -> list[Path]:
    """`count` copies of one tiny valid file in folders of `per_folder`, dated a minute apart up to a minute ago.

    Discovery reads only footers, so copies are as good as distinct files; their dates put all but the
    last hour's worth outside the cursor's look-back window, as in an inbox filled over days.
    """
    template = inbox / "_template.parquet"
    write_video(template, make_clips(1))
    data = template.read_bytes()
    template.unlink()
    now = time.time()
    paths = []
    for index in range(count):
        path = inbox / f"cam{index // per_folder:03d}" / f"v{index % per_folder:03d}.mp4.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stamp = now - 60 * (count - index)
        os.utime(path, (stamp, stamp))
        paths.append(path)
    return paths


def add_new_files(inbox: Path, count: int, data_from: Path) -> list[Path]:
    """`count` files arriving now, in a new folder."""
    data = data_from.read_bytes()
    paths = []
    for index in range(count):
        path = inbox / "new" / f"n{index:03d}.mp4.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths
