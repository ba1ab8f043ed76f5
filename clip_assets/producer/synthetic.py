"""Synthetic sample videos, so the pipeline can be tried and tested without real footage.

Three short 320x240, 24 fps H.264 MP4s drawn with numpy: two that move (their clips pass a motion
filter) and one perfectly still (its clips are filtered). Content is a pure function of the frame
number, so two runs produce the same frames (and, with the same PyAV build, the same bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import av
import numpy as np

from clip_assets.producer.annotation import Annotation, annotation_path

WIDTH = 320
HEIGHT = 240
FRAMERATE = 24
NUM_FRAMES = 120  # 5 seconds

# SMPTE-style colour bars: white, yellow, cyan, green, magenta, red, blue.
_BARS = np.array(
    [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
    ],
    dtype=np.uint8,
)
_BOX_SIDE = 64
_BOX_VELOCITY = (7, 5)  # pixels per frame, x and y

Painter = Callable[[int], np.ndarray]


def _moving_bars(index: int) -> np.ndarray:
    """Colour bars scrolling left 4 px per frame over a grey ramp that scrolls down."""
    columns = (np.arange(WIDTH) + 4 * index) * len(_BARS) // WIDTH % len(_BARS)
    frame = np.repeat(_BARS[columns][np.newaxis], HEIGHT, axis=0)
    ramp = ((np.arange(HEIGHT) * 2 + 3 * index) % 256).astype(np.uint8)
    frame[HEIGHT * 2 // 3 :] = ramp[HEIGHT * 2 // 3 :, np.newaxis, np.newaxis]
    return frame


def _bounce(position: int, span: int) -> int:
    """Where a point moving `position` steps along a segment of length `span` is, reflecting at ends."""
    cycle = position % (2 * span)
    return cycle if cycle <= span else 2 * span - cycle


def _bouncing_box(index: int) -> np.ndarray:
    """An orange square bouncing around a dark blue background."""
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[:] = (20, 30, 60)
    x = _bounce(_BOX_VELOCITY[0] * index, WIDTH - _BOX_SIDE)
    y = _bounce(_BOX_VELOCITY[1] * index, HEIGHT - _BOX_SIDE)
    frame[y : y + _BOX_SIDE, x : x + _BOX_SIDE] = (250, 150, 30)
    return frame


@cache
def _still_picture() -> np.ndarray:
    """A diagonal colour gradient with a white circle; drawn once, the still video repeats it."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    frame = np.stack([cols * 255 // WIDTH, rows * 255 // HEIGHT, (rows + cols) * 255 // (HEIGHT + WIDTH)], axis=-1)
    inside = (rows - HEIGHT // 2) ** 2 + (cols - WIDTH // 2) ** 2 < 50**2
    frame[inside] = (255, 255, 255)
    picture = frame.astype(np.uint8)
    picture.flags.writeable = False  # shared by every call
    return picture


def _still_image(index: int) -> np.ndarray:
    """The same picture for every frame (`index` is ignored)."""
    del index
    return _still_picture()


SAMPLE_VIDEOS: dict[str, Painter] = {
    "cam1/street walk.mp4": _moving_bars,
    "cam2/bouncing box.mp4": _bouncing_box,
    "static/still frame.mp4": _still_image,
}


# What a person would say about each sample: the demo's captions and scores (`producer.annotation`).
SAMPLE_ANNOTATIONS: dict[str, Annotation] = {
    "cam1/street walk.mp4": Annotation("colour bars scroll left over a rising grey ramp", 3.8),
    "cam2/bouncing box.mp4": Annotation("an orange box bounces around a dark blue room", 4.6),
    "static/still frame.mp4": Annotation("a white circle on a still colour gradient", 2.1),
}
# The demo's planted near-duplicate: street walk's first two seconds uploaded again, encoded a little
# worse, under another name, as a re-upload looks in a real collection.
PLANTED_DUPLICATE = "cam3/street walk re-upload.mp4"
PLANTED_DUPLICATE_OF = "cam1/street walk.mp4"
_PLANTED_FRAMES = 2 * FRAMERATE
_PLANTED_CRF = "30"


def write_video(path: Path, painter: Painter, num_frames: int = NUM_FRAMES, crf: str = "20") -> Path:
    """Encode `num_frames` frames from `painter` as H.264 MP4 at `path`; `veryfast` keeps it quick."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FRAMERATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": crf, "preset": "veryfast"}
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(painter(index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_sample_videos(directory: Path) -> list[Path]:
    """Write the three sample videos below `directory` (sub-folders, a space in each name); return paths."""
    return [write_video(Path(directory) / relative, painter) for relative, painter in SAMPLE_VIDEOS.items()]


def write_sample_annotations(directory: Path) -> list[Path]:
    """Each sample video's annotation file, beside it: its caption and a rater's aesthetic score."""
    written = []
    for relative, annotation in SAMPLE_ANNOTATIONS.items():
        path = annotation_path(Path(directory) / relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(annotation.to_json(), encoding="utf-8")
        written.append(path)
    return written


def write_planted_duplicate(directory: Path) -> Path:
    """`PLANTED_DUPLICATE`: one clip's worth of `PLANTED_DUPLICATE_OF`, re-encoded, annotated like it."""
    path = write_video(
        Path(directory) / PLANTED_DUPLICATE, SAMPLE_VIDEOS[PLANTED_DUPLICATE_OF], _PLANTED_FRAMES, _PLANTED_CRF
    )
    annotation_path(path).write_text(SAMPLE_ANNOTATIONS[PLANTED_DUPLICATE_OF].to_json(), encoding="utf-8")
    return path
