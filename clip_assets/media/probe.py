"""In-process probing of clips (MP4 bytes) and source videos with PyAV.

NeMo Curator probes every clip by writing it to a temp file and running `ffprobe` (about 48 ms of CPU
per clip, most of its run time). Here the bytes are opened in memory and only demuxed, never decoded,
so a clip costs well under a millisecond, and `num_frames` is counted rather than estimated
(NeMo's `int(duration * fps)` reports 7 for an 8-frame clip).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import av.stream
import av.video.stream

# `skip_frame=all` keeps avformat_find_stream_info from decoding frames to learn the pixel format,
# which ClipProbe does not report and which would cost a full-resolution decode per clip; the tiny
# probe size stops it reading ahead for the same lost cause. Dimensions, codec and rate come from the
# container header either way.
_HEADER_ONLY_OPTIONS = {"skip_frame": "all", "probesize": "32"}


class MediaError(ValueError):
    """Bytes or a file that are not a usable video; the message says which and why."""


@dataclass(frozen=True)
class ClipProbe:
    """What NeMo's clip writer reports for a clip's MP4 bytes, with `num_frames` exact."""

    width: int
    height: int
    framerate: float
    num_frames: int
    video_codec: str


@dataclass(frozen=True)
class VideoProbe:
    """A source video's metadata, field for field what NeMo keeps on its `Video` object."""

    width: int | None
    height: int | None
    framerate: float | None
    num_frames: int | None
    duration: float | None
    video_codec: str | None
    pixel_format: str | None
    audio_codec: str | None


def stream_framerate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """ffprobe's `avg_frame_rate`, falling back to the guessed and base rates when it is unknown."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def codec_name(stream: av.stream.Stream) -> str:
    """ffprobe's `codec_name`: the codec id's canonical name (`h264`, `av1`), not the decoder's."""
    return stream.codec_context.codec.canonical_name


def count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The exact number of frames a decoder outputs, counted by demuxing only.

    In MP4/MOV, Matroska and WebM one packet is one frame; packets an edit list marks as discarded
    are demuxed but never shown, so they do not count. When the demuxed packets disagree with the
    header's sample count the file is truncated or corrupt, and a count would silently be wrong, so
    that is an error.
    """
    shown = demuxed = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        demuxed += 1
        if not packet.is_discard:
            shown += 1
    if stream.frames and demuxed != stream.frames:
        raise MediaError(f"truncated or corrupt: the header lists {stream.frames} frames, the data holds {demuxed}")
    return shown


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise MediaError("no decoder for the video stream's codec")
    return stream


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's duration in seconds, else the container's, else None."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_mp4(data: bytes | memoryview) -> ClipProbe:
    """Probe a clip's MP4 bytes in memory: dimensions, ffprobe's framerate, exact frame count, codec."""
    try:
        with av.open(io.BytesIO(data), mode="r", format="mp4", options=_HEADER_ONLY_OPTIONS) as container:
            stream = _video_stream(container)
            rate = stream_framerate(stream)
            num_frames = count_frames(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = codec_name(stream)
    except av.FFmpegError as exc:
        raise MediaError(f"not a readable MP4 ({len(data)} bytes): {exc.strerror}") from None
    if rate is None or width <= 0 or height <= 0 or num_frames == 0:
        raise MediaError(
            f"not a usable video: {width}x{height}, framerate {rate}, {num_frames} frames ({len(data)} bytes)"
        )
    return ClipProbe(width=width, height=height, framerate=float(rate), num_frames=num_frames, video_codec=codec)


def probe_video_file(path: str | os.PathLike[str]) -> VideoProbe:
    """Probe a source video on disk; the frame count is exact (demuxed), which reads the whole file once.

    Duration is the video stream's, else the container's. Unknown values are None, not guesses.
    """
    try:
        with av.open(os.fspath(path)) as container:
            stream = _video_stream(container)
            rate = stream_framerate(stream)
            context = stream.codec_context
            audio = container.streams.audio
            probe = VideoProbe(
                width=context.width or None,
                height=context.height or None,
                framerate=float(rate) if rate is not None else None,
                num_frames=count_frames(container, stream) or None,
                duration=_duration(container, stream),
                video_codec=codec_name(stream),
                pixel_format=context.format.name if context.format is not None else None,
                audio_codec=codec_name(audio[0]) if audio and audio[0].codec_context is not None else None,
            )
    except av.FFmpegError as exc:
        raise MediaError(f"{os.fspath(path)}: not a readable video: {exc.strerror}") from None
    except MediaError as exc:
        raise MediaError(f"{os.fspath(path)}: {exc}") from None
    return probe
