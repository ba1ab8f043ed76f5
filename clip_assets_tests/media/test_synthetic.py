"""The sample videos: where they land, what they are, and that they are reproducible."""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path

import av
import numpy as np

from clip_assets.media.probe import VideoProbe, probe_video_file
from clip_assets.producer.synthetic import SAMPLE_VIDEOS, write_video


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_sample_videos_land_in_sub_folders_with_spaces_in_their_names(
    sample_videos: list[Path], sample_root: Path
) -> None:
    assert [path.relative_to(sample_root).as_posix() for path in sample_videos] == [
        "cam1/street walk.mp4",
        "cam2/bouncing box.mp4",
        "static/still frame.mp4",
    ]


def test_sample_videos_are_five_second_320x240_h264_at_24_fps(sample_videos: list[Path]) -> None:
    for path in sample_videos:
        assert probe_video_file(path) == VideoProbe(
            width=320,
            height=240,
            framerate=24.0,
            num_frames=120,
            duration=5.0,
            video_codec="h264",
            pixel_format="yuv420p",
            audio_codec=None,
        )


def first_and_last_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frames = container.decode(video=0)
        first = next(frames)
        last = deque(frames, maxlen=1)[0]
        return first.to_ndarray(format="rgb24"), last.to_ndarray(format="rgb24")


def test_only_the_still_video_is_still(sample_videos: list[Path]) -> None:
    for path in sample_videos:
        first, last = first_and_last_frames(path)
        change = np.abs(last.astype(int) - first.astype(int)).mean()
        if path.parent.name == "static":
            assert change < 0.5
        else:
            assert change > 10


def test_the_same_video_written_twice_has_the_same_frames(tmp_path: Path) -> None:
    painter = SAMPLE_VIDEOS["cam2/bouncing box.mp4"]
    first = write_video(tmp_path / "a.mp4", painter, num_frames=12)
    second = write_video(tmp_path / "b.mp4", painter, num_frames=12)

    digests = [hashlib.sha256(b"".join(f.tobytes() for f in decoded_frames(p))).hexdigest() for p in (first, second)]
    assert digests[0] == digests[1]
    assert len(decoded_frames(first)) == 12
