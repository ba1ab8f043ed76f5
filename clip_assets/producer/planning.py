"""Pure planning of clips, frame ranges and windows (NeMo's fixed-stride and windowing rules), and the
settings that drive it."""

from __future__ import annotations

import math
from dataclasses import dataclass

# NeMo's windowing: windows shorter than this are not made, and a remainder shorter than half a
# window is merged into the last full window instead of becoming a window of its own.
MIN_WINDOW_FRAMES = 4
# Spans are float seconds; a frame within this fraction of a frame of a span edge counts as on it.
_EDGE_TOLERANCE_FRAMES = 1e-6


@dataclass(frozen=True)
class IngestSettings:
    """How videos are cut and what each clip carries; defaults follow NeMo's fixed-stride pipeline.

    `clips_per_chunk` 0 keeps every clip in chunk 0; `crf` is libx264's constant rate factor (other
    encoder options stay at libx264's defaults, as in NeMo's transcoding). A clip is filtered when
    its frame-difference `MotionScore.global_mean` is below `min_frame_difference` (grey levels,
    0..255: not NeMo's motion-vector threshold, whose scores are about 0.001 to 0.02); the per-patch
    minimum is recorded but not used, since any still corner of the picture makes it zero.
    """

    clip_len_s: float = 2.0
    stride_s: float = 2.0
    min_clip_len_s: float = 1.0
    window_frames: int = 256
    preview_height: int = 240
    preview_fps: float = 4.0
    min_frame_difference: float = 0.5
    clips_per_chunk: int = 0
    crf: int = 23

    def __post_init__(self) -> None:
        checks = {
            "clip_len_s": self.clip_len_s > 0,
            "stride_s": self.stride_s > 0,
            "min_clip_len_s": 0 <= self.min_clip_len_s <= self.clip_len_s,
            "window_frames": self.window_frames >= 1,
            "preview_height": self.preview_height >= 1,
            "preview_fps": self.preview_fps > 0,
            "min_frame_difference": self.min_frame_difference >= 0,
            "clips_per_chunk": self.clips_per_chunk >= 0,
            "crf": 0 <= self.crf <= 51,
        }
        for name, ok in checks.items():
            if not ok or not math.isfinite(getattr(self, name)):
                raise ValueError(f"IngestSettings.{name}={getattr(self, name)!r} is out of range")


DEFAULT_SETTINGS = IngestSettings()


def plan_clip_spans(duration: float, settings: IngestSettings) -> list[tuple[float, float]]:
    """NeMo's FixedStrideExtractorStage: `[k*stride, k*stride + clip_len]` cut at `duration`, keeping
    only clips at least `min_clip_len_s` long. Starts accumulate by addition, as NeMo's do, so the
    spans (and the clip ids derived from them) match NeMo's to the last bit.
    """
    spans: list[tuple[float, float]] = []
    start = 0.0
    while start < duration:
        end = min(start + settings.clip_len_s, duration)
        if end - start >= settings.min_clip_len_s:
            spans.append((start, end))
        start += settings.stride_s
    return spans


def clip_frame_range(span: tuple[float, float], framerate: float) -> range:
    """Source frames (index / framerate seconds) inside `[start, end)`: what `ffmpeg -ss -to` keeps."""
    first = math.ceil(span[0] * framerate - _EDGE_TOLERANCE_FRAMES)
    stop = math.ceil(span[1] * framerate - _EDGE_TOLERANCE_FRAMES)
    return range(first, stop)


def plan_windows(num_frames: int, window_frames: int) -> list[tuple[int, int]]:
    """NeMo's `compute_windows`: `(start_frame, end_frame)` pairs, clip-relative, end INCLUSIVE.

    Full windows of `window_frames`; a remainder of at least half a window becomes a last, shorter
    window, a smaller one extends the last full window, so every frame is in exactly one window.
    Clips shorter than MIN_WINDOW_FRAMES get none.
    """
    if num_frames < MIN_WINDOW_FRAMES:
        return []
    if num_frames <= window_frames:
        return [(0, num_frames - 1)]
    full, remainder = divmod(num_frames, window_frames)
    windows = [(i * window_frames, (i + 1) * window_frames - 1) for i in range(full)]
    if remainder >= window_frames // 2:
        windows.append((full * window_frames, num_frames - 1))
    elif remainder:
        windows[-1] = (windows[-1][0], num_frames - 1)
    return windows


def chunk_count(num_clips: int, clips_per_chunk: int) -> int:
    """How many clip chunks `num_clips` make; an unchunked video with clips has one."""
    if clips_per_chunk == 0:
        return 1 if num_clips else 0
    return math.ceil(num_clips / clips_per_chunk)
