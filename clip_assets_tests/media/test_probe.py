"""probe_mp4 and probe_video_file on real media written with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clip_assets.media.probe import ClipProbe, MediaError, VideoProbe, probe_mp4, probe_video_file


def encode_mp4(
    num_frames: int,
    *,
    rate: Fraction | int = 24,
    width: int = 64,
    height: int = 48,
    with_audio: bool = False,
    video: bool = True,
) -> bytes:
    """An MP4 with exactly `num_frames` changing frames (B-frames included), optionally with AAC audio."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        # Every stream must exist before the first packet is muxed.
        stream = container.add_stream("libx264", rate=rate) if video else None
        audio = container.add_stream("aac", rate=48000, layout="mono") if with_audio else None
        if stream is not None:
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(num_frames):
                image = np.full((height, width, 3), i * 9 % 256, dtype=np.uint8)
                image[:, i % width] = 255
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
        if audio is not None:
            for i in range(4):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 48000, i * 1024, Fraction(1, 48000)
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize("num_frames", [1, 2, 8, 25])
def test_probe_counts_frames_exactly(num_frames: int) -> None:
    probe = probe_mp4(encode_mp4(num_frames))

    assert probe == ClipProbe(width=64, height=48, framerate=24.0, num_frames=num_frames, video_codec="h264")


def test_probe_reports_ffprobes_average_rate_for_ntsc_rates() -> None:
    probe = probe_mp4(encode_mp4(10, rate=Fraction(30000, 1001), width=96, height=80))

    assert probe.framerate == 30000 / 1001
    assert (probe.width, probe.height, probe.num_frames) == (96, 80, 10)


def test_probe_ignores_an_audio_track() -> None:
    assert probe_mp4(encode_mp4(8, with_audio=True)).num_frames == 8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable MP4"),
        (b"definitely not a video" * 100, "not a readable MP4"),
        (encode_mp4(8)[:200], "not a readable MP4"),
    ],
    ids=["empty", "garbage", "header-only"],
)
def test_probe_rejects_bytes_that_are_not_a_video(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        probe_mp4(data)


def test_probe_rejects_an_mp4_without_video() -> None:
    with pytest.raises(MediaError, match="no video stream"):
        probe_mp4(encode_mp4(0, video=False, with_audio=True))


def test_probe_rejects_an_mp4_whose_frames_are_missing() -> None:
    data = encode_mp4(8)
    # PyAV writes the sample table (moov) after the frames (mdat); cut the frames out, keep the table.
    mdat = data.index(b"mdat") - 4
    size = int.from_bytes(data[mdat : mdat + 4], "big")
    truncated = data[:mdat] + (8).to_bytes(4, "big") + b"mdat" + data[mdat + size :]

    with pytest.raises(MediaError):
        probe_mp4(truncated)


def test_probe_video_file_reports_source_metadata(tmp_path: Path) -> None:
    path = tmp_path / "with audio.mp4"
    path.write_bytes(encode_mp4(12, with_audio=True))

    assert probe_video_file(path) == VideoProbe(
        width=64,
        height=48,
        framerate=24.0,
        num_frames=12,
        duration=0.5,
        video_codec="h264",
        pixel_format="yuv420p",
        audio_codec="aac",
    )


def test_probe_video_file_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")

    with pytest.raises(MediaError, match=r"notes\.mp4"):
        probe_video_file(path)
