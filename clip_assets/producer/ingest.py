"""The producer: source videos in, processed-video files out, made in-process with PyAV and Pillow.

It plays the part of NeMo Curator's splitting pipeline (fixed-stride clipping, transcoding, motion
filter, windowing, previews, embeddings) with cheap honest stand-ins for the models: clips get a
colour-grid embedding and a frame-difference motion score (under names of its own, not NeMo's
motion-vector keys), and never invented captions: a caption and an aesthetic score come only from a
video's annotation file, when it has one. A clip keeps the source's
first audio track, as NeMo's transcoding does: its packets in the clip's span, copied, not re-encoded.
Each source is demuxed and decoded once, front to back; frames and audio packets are handed to every
clip being built and dropped, so memory stays bounded by about one clip (its preview frames and its
compressed MP4) whatever the video's length.
"""

from __future__ import annotations

import dataclasses
import io
import math
import mmap
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.audio.stream
import av.container
import av.video.stream
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter
from PIL import Image
from tqdm import tqdm

from clip_assets import layout
from clip_assets.contract import write_processed_video
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.contract.records import ChunkCounters, ClipRecord, VideoInfo, Window
from clip_assets.media.probe import MediaError, VideoProbe, probe_video_file, stream_framerate
from clip_assets.producer.annotation import CAPTION_MODEL, Annotation, read_annotation
from clip_assets.producer.descriptor import (
    COLOR_GRID_ALGORITHM,
    FRAME_DIFFERENCE_MEAN,
    FRAME_DIFFERENCE_PATCH_MIN,
    MOTION_FRAME_SIZE,
    MotionScore,
    color_grid_embedding,
    patch_differences,
)
from clip_assets.producer.planning import (
    DEFAULT_SETTINGS,
    IngestSettings,
    chunk_count,
    clip_frame_range,
    plan_clip_spans,
    plan_windows,
)
from clip_assets.storage import Storage

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
MOTION_FILTER = "motion"
# How many of a clip's preview frames, evenly spread, feed its colour-grid embedding.
EMBEDDING_FRAMES = 8
# NeMo's PreviewStage writes lossy WebP at quality 50; method 4 (Pillow's default) is about twice as
# fast as NeMo's compression level 6 for files about 7% larger.
WEBP_QUALITY = 50
WEBP_METHOD = 4
# Audio packets kept back this long before the earliest clip still to come (muxers interleave the two
# streams within about half a second).
AUDIO_WAIT_S = 1.0


def render_webp(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """An animated, looping WebP of RGB uint8 `frames` shown at `fps`."""
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
        quality=WEBP_QUALITY,
        method=WEBP_METHOD,
    )
    return buffer.getvalue()


class _FrameConverter:
    """The conversions clips need from a source frame, each with its own scaler.

    A shared reformatter keeps its swscale context between frames; converting through a fresh one
    per frame costs about five times as much.
    """

    def __init__(self, encode_size: tuple[int, int], preview_size: tuple[int, int]) -> None:
        self.encode_size = encode_size
        self.preview_size = preview_size
        self._gray = VideoReformatter()
        self._preview = VideoReformatter()
        self._encoder = VideoReformatter()

    def gray(self, frame: av.VideoFrame) -> np.ndarray:
        """The small grayscale square motion is measured on."""
        size = MOTION_FRAME_SIZE
        return self._gray.reformat(frame, size, size, "gray", interpolation="AREA").to_ndarray()

    def preview(self, frame: av.VideoFrame) -> np.ndarray:
        """RGB at the preview size, for WebPs and the embedding."""
        width, height = self.preview_size
        return self._preview.reformat(frame, width, height, "rgb24", interpolation="AREA").to_ndarray()

    def for_encoder(self, frame: av.VideoFrame) -> av.VideoFrame:
        """yuv420p at even dimensions, the input libx264 is given."""
        width, height = self.encode_size
        return self._encoder.reformat(frame, width, height, "yuv420p")


class _SourceFrame:
    """One decoded source frame and what clips derive from it, each computed at most once.

    Overlapping clips (stride < clip length) share frames, so conversions are cached here rather
    than redone per clip.
    """

    def __init__(self, frame: av.VideoFrame, converter: _FrameConverter) -> None:
        self._frame = frame
        self._converter = converter
        self._preview: np.ndarray | None = None
        self._encoder_frame: av.VideoFrame | None = None
        self.gray = converter.gray(frame)

    def preview(self) -> np.ndarray:
        if self._preview is None:
            self._preview = self._converter.preview(self._frame)
        return self._preview

    def for_encoder(self, pts: int, time_base: Fraction) -> av.VideoFrame:
        """The frame stamped for one clip's encoder, which copies the stamp when it takes the frame.

        The decoder's picture type is cleared: libx264 would otherwise copy the source's I/P/B
        pattern instead of choosing its own.
        """
        if self._encoder_frame is None:
            self._encoder_frame = self._converter.for_encoder(self._frame)
        frame = self._encoder_frame
        frame.pts, frame.time_base, frame.pict_type = pts, time_base, PictureType.NONE
        return frame


@dataclass(frozen=True)
class _ClipPlan:
    """Everything about a clip that is known before decoding."""

    number: int
    uuid: str
    chunk_index: int
    span: tuple[float, float]


class _ClipBuilder:
    """Builds one clip from the frames handed to it: MP4 encoder, motion score, preview frames."""

    def __init__(
        self,
        plan: _ClipPlan,
        rate: Fraction,
        encode_size: tuple[int, int],
        settings: IngestSettings,
        audio: av.audio.stream.AudioStream | None = None,
    ) -> None:
        self.plan = plan
        self._rate = rate
        self._settings = settings
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = encode_size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(settings.crf)}
        # The source's audio, copied: its codec parameters, and packets shifted to the clip's start.
        self._audio = self._container.add_stream_from_template(audio) if audio is not None else None
        self._motion = MotionScore()
        self._previews: list[tuple[int, np.ndarray]] = []
        self._next_preview = 0
        self._num_frames = 0

    def _preview_frame_index(self, sample: int) -> int:
        """The clip frame nearest to preview time `sample / preview_fps` (ffmpeg's fps filter)."""
        return math.floor(sample * float(self._rate) / self._settings.preview_fps + 0.5)

    def add(self, source: _SourceFrame, motion: np.ndarray | None) -> None:
        """Append the next frame; `motion` is its patch difference to the previous source frame."""
        index = self._num_frames
        if index > 0 and motion is not None:
            self._motion.add(motion)
        if self._preview_frame_index(self._next_preview) == index:
            self._previews.append((index, source.preview()))
            while self._preview_frame_index(self._next_preview) <= index:
                self._next_preview += 1
        self._container.mux(self._stream.encode(source.for_encoder(index, 1 / self._rate)))
        self._num_frames += 1

    def add_audio(self, packet: av.Packet[av.audio.stream.AudioStream]) -> None:
        """Copy one source audio packet of the clip's span into the clip, its time counted from the clip's start."""
        if self._audio is None or packet.pts is None or packet.time_base is None:
            return
        offset = round(self.plan.span[0] / packet.time_base)
        copy = av.Packet(bytes(packet))
        copy.pts = packet.pts - offset
        copy.dts = (packet.dts if packet.dts is not None else packet.pts) - offset
        copy.duration, copy.time_base, copy.stream = packet.duration, packet.time_base, self._audio
        copy.is_keyframe = packet.is_keyframe
        self._container.mux(copy)

    def finish(self) -> ClipRecord:
        """Flush the encoder and turn what was gathered into the clip's record."""
        if self._num_frames == 0:
            self._container.close()
            return _missing_clip(self.plan)
        self._container.mux(self._stream.encode(None))
        self._container.close()
        record = _empty_record(self.plan)
        record.mp4 = self._buffer.getvalue()
        record.extra_metadata = {
            FRAME_DIFFERENCE_MEAN: self._motion.global_mean,
            FRAME_DIFFERENCE_PATCH_MIN: self._motion.per_patch_min,
        }
        if self._motion.global_mean < self._settings.min_frame_difference:
            record.filtered, record.filtered_by = True, MOTION_FILTER
            return record
        windows = plan_windows(self._num_frames, self._settings.window_frames)
        record.windows = [self._window(start, end) for start, end in windows]
        picks = np.linspace(0, len(self._previews) - 1, min(EMBEDDING_FRAMES, len(self._previews))).round()
        record.embeddings = {COLOR_GRID_ALGORITHM: color_grid_embedding([self._previews[int(i)][1] for i in picks])}
        return record

    def _window(self, start: int, end: int) -> Window:
        """A window with its animated preview; None when no preview frame falls inside it."""
        frames = [image for index, image in self._previews if start <= index <= end]
        webp = render_webp(frames, self._settings.preview_fps) if frames else None
        return Window(start_frame=start, end_frame=end, webp=webp)


def _empty_record(plan: _ClipPlan) -> ClipRecord:
    return ClipRecord(
        row=plan.number,
        uuid=plan.uuid,
        chunk_index=plan.chunk_index,
        span_start=plan.span[0],
        span_end=plan.span[1],
        filtered=False,
    )


def _missing_clip(plan: _ClipPlan) -> ClipRecord:
    """A planned clip no decoded frame fell into (the container over-reported the video's length).

    Kept, like NeMo keeps clips whose transcode failed: without MP4, with the reason in `errors`.
    """
    record = _empty_record(plan)
    record.errors = {"transcode": "no source frame falls inside this clip's span"}
    return record


def _sizes(probe: VideoProbe, settings: IngestSettings) -> tuple[tuple[int, int], tuple[int, int]]:
    """(encode size, preview size): libx264's yuv420p needs even sides; previews keep the aspect."""
    width, height = probe.width or 0, probe.height or 0
    if width < 2 or height < 2:
        raise MediaError(f"cannot encode {width}x{height} frames")
    preview_width = max(1, round(width * settings.preview_height / height))
    return (width - width % 2, height - height % 2), (preview_width, settings.preview_height)


def _build_clips(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    plans: Sequence[_ClipPlan],
    probe: VideoProbe,
    settings: IngestSettings,
) -> Iterator[ClipRecord]:
    """Decode the stream once, feeding each frame to the clips whose frame range holds it.

    Clips are yielded in plan order as soon as their last frame is in.
    """
    rate = stream_framerate(stream)
    if rate is None:
        raise MediaError("the video stream has no frame rate")
    converter = _FrameConverter(*_sizes(probe, settings))
    ranges = [clip_frame_range(plan.span, float(rate)) for plan in plans]
    audio = container.streams.audio[0] if container.streams.audio else None
    # Audio packets demuxed ahead of the video frame that opens their clip wait here for it.
    waiting_audio: deque[tuple[float, av.Packet[av.audio.stream.AudioStream]]] = deque()
    active: list[tuple[_ClipBuilder, range]] = []
    next_plan = 0
    previous_gray: np.ndarray | None = None
    index = 0
    for packet in container.demux(*([stream, audio] if audio is not None else [stream])):
        if packet.stream is audio:
            sound = cast("av.Packet[av.audio.stream.AudioStream]", packet)
            if sound.pts is not None and sound.time_base is not None and sound.size:
                moment = float(sound.pts * sound.time_base)
                waiting_audio.append((moment, sound))
                for builder, _ in active:
                    _hand_audio(builder, moment, sound)
            continue
        for frame in packet.decode():
            if not isinstance(frame, av.VideoFrame):
                continue
            source = _SourceFrame(frame, converter)
            motion = patch_differences(previous_gray, source.gray) if previous_gray is not None else None
            previous_gray = source.gray
            while next_plan < len(plans) and ranges[next_plan].start <= index:
                builder = _ClipBuilder(plans[next_plan], rate, converter.encode_size, settings, audio)
                for moment, waiting in waiting_audio:
                    _hand_audio(builder, moment, waiting)
                active.append((builder, ranges[next_plan]))
                next_plan += 1
            for builder, frames in active:
                if index in frames:
                    builder.add(source, motion)
            while active and active[0][1].stop <= index + 1:
                yield active.pop(0)[0].finish()
            starts = [b.plan.span[0] for b, _ in active] + [p.span[0] for p in plans[next_plan : next_plan + 1]]
            earliest = min(starts, default=math.inf)
            while waiting_audio and waiting_audio[0][0] < earliest - AUDIO_WAIT_S:
                waiting_audio.popleft()
            index += 1
    for builder, _ in active:
        yield builder.finish()
    for plan in plans[next_plan:]:
        yield _missing_clip(plan)


def _hand_audio(builder: _ClipBuilder, moment: float, packet: av.Packet[av.audio.stream.AudioStream]) -> None:
    """An audio packet belongs to the clip whose span holds its start time."""
    if builder.plan.span[0] <= moment < builder.plan.span[1]:
        builder.add_audio(packet)


def _plans(source_video: str, probe: VideoProbe, settings: IngestSettings) -> list[_ClipPlan]:
    """The clips of a video, from NeMo's duration rule `num_frames / framerate`."""
    if not probe.framerate or not probe.num_frames:
        raise MediaError(f"needs a frame rate and a frame count, got {probe.framerate} and {probe.num_frames}")
    spans = plan_clip_spans(probe.num_frames / probe.framerate, settings)
    return [
        _ClipPlan(
            number=number,
            uuid=derive_clip_uuid(source_video, start, end, probe.framerate),
            chunk_index=number // settings.clips_per_chunk if settings.clips_per_chunk else 0,
            span=(start, end),
        )
        for number, (start, end) in enumerate(spans)
    ]


def _video_info(source_video: str, probe: VideoProbe, num_clips: int, settings: IngestSettings) -> VideoInfo:
    return VideoInfo(
        source_video=source_video,
        width=probe.width,
        height=probe.height,
        framerate=probe.framerate,
        num_frames=probe.num_frames,
        duration=probe.duration,
        video_codec=probe.video_codec,
        pixel_format=probe.pixel_format,
        audio_codec=probe.audio_codec,
        num_total_clips=num_clips,
        num_clip_chunks=chunk_count(num_clips, settings.clips_per_chunk),
    )


def _write_with_counters(destination: Path, info: VideoInfo, records: Iterable[ClipRecord]) -> Path:
    """Write `records` to `destination` with per-chunk motion counters in the file metadata.

    The counters are only known once every clip is built; the writer asks for the metadata after the
    last clip, so the file is still written once, streaming.
    """
    filtered_by_motion: Counter[int] = Counter()

    def tallied() -> Iterator[ClipRecord]:
        for record in records:
            if record.filtered_by == MOTION_FILTER:
                filtered_by_motion[record.chunk_index] += 1
            yield record

    def final_info() -> VideoInfo:
        counters = tuple(ChunkCounters(i, filtered_by_motion[i], 0) for i in range(info.num_clip_chunks))
        return dataclasses.replace(info, chunks=counters)

    return write_processed_video(destination, final_info, tallied())


def _annotated(records: Iterable[ClipRecord], annotation: Annotation) -> Iterator[ClipRecord]:
    """Each passed clip with the annotation's caption on every window and its aesthetic score."""
    for record in records:
        if not record.filtered and record.mp4 is not None:
            if annotation.caption is not None:
                for window in record.windows:
                    window.captions = {CAPTION_MODEL: annotation.caption}
            record.aesthetic_score = annotation.aesthetic_score
        yield record


def _calling_back(records: Iterable[ClipRecord], on_clip: Callable[[], object]) -> Iterator[ClipRecord]:
    """`records` unchanged, calling `on_clip` as each one is done."""
    for record in records:
        on_clip()
        yield record


def ingest_video(
    video: Path,
    destination: Path,
    *,
    source_video: str,
    settings: IngestSettings = DEFAULT_SETTINGS,
    on_clip: Callable[[], object] | None = None,
    annotation: Annotation | None = None,
) -> Path:
    """Cut, transcode and describe one source video into the processed-video file `destination`.

    `source_video` is the name clip ids are derived from (NeMo's `input_video`). The source is
    decoded once; `on_clip` is called as each clip is done, for progress bars. `annotation` gives
    every passed clip its caption and aesthetic score. Errors name `video`.
    """
    video = Path(video)
    probe = probe_video_file(video)
    try:
        plans = _plans(source_video, probe, settings)
        info = _video_info(source_video, probe, len(plans), settings)
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            records = _build_clips(container, stream, plans, probe, settings)
            if annotation is not None:
                records = _annotated(records, annotation)
            if on_clip is not None:
                records = _calling_back(records, on_clip)
            return _write_with_counters(destination, info, records)
    except (av.FFmpegError, MediaError) as exc:
        raise MediaError(f"{video}: {exc}") from None


def _relative_key(video: Path, root: Path) -> str:
    try:
        return video.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        raise ValueError(f"{video} is not below the input root {root}") from None


def _videos_below(directory: Path) -> list[Path]:
    """Video files anywhere below `directory`, sorted; hidden files (`._clip.mp4` and the like) skipped."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )


def find_videos(paths: Iterable[Path], input_root: Path | None = None) -> list[tuple[Path, str]]:
    """(video, relative key) for every video named by `paths`, checked before anything is ingested.

    A directory is searched recursively for VIDEO_EXTENSIONS (hidden files skipped) and its videos
    are keyed relative to it; a file argument is taken whatever its extension and keyed by its name.
    With `input_root`, every key is relative to that root instead. Two videos with the same key
    would overwrite each other's output, so that is an error.
    """
    found: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [(video, _relative_key(video, input_root or path)) for video in _videos_below(path)]
        elif path.is_file():
            found.append((path, _relative_key(path, input_root) if input_root else path.name))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    first_seen: dict[str, Path] = {}
    for video, key in found:
        if key in first_seen:
            raise ValueError(f"{first_seen[key]} and {video} would both be ingested as {key!r}")
        first_seen[key] = video
    return found


def ingest_paths(
    paths: Sequence[Path],
    inbox: Storage,
    *,
    input_root: Path | None = None,
    settings: IngestSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    skip_up_to_date: bool = False,
) -> list[str]:
    """Ingest every video named by `paths` into the inbox as `f"{key}.parquet"` (see `find_videos`); returns
    each file's full location. The inbox is any storage: a folder, or a store's URL opened with
    `open_storage`, so the files land where the dataset's sensor looks.

    Each file is made in a local temporary folder and published with one atomic `put` (a rename on
    disk; one PUT or a completed multipart upload on S3), so the inbox never holds a part of one.
    `source_video`, which clip ids derive from, is each video's absolute POSIX path with symlinks
    resolved, so the same file gets the same ids whichever path named it (and a resolved
    `input_path` prefix strips cleanly). A video's annotation file (`producer.annotation`) gives its
    passed clips a caption and an aesthetic score. Stops at the first video that fails, naming it.
    With `skip_up_to_date`, a video whose processed file is newer than it is not ingested again:
    libx264's bits are not reproducible run to run, so re-ingesting would change every clip's MP4.
    """
    jobs = find_videos(paths, input_root)
    annotations = {video: read_annotation(video) for video, _ in jobs}  # every file checked before any work
    written: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clip-assets-ingest-") as scratch:
        for video, key in tqdm(jobs, unit="video", disable=not progress):
            target = f"{key}.parquet"
            existing = inbox.stat(target) if skip_up_to_date else None
            if existing is not None and existing.modified_ns >= video.stat().st_mtime_ns:
                written.append(layout.full_location(inbox.root, target))
                continue
            with tqdm(desc=key, unit="clip", leave=False, disable=not progress) as clip_bar:
                made = ingest_video(
                    video,
                    Path(scratch) / "video.parquet",
                    source_video=video.resolve().as_posix(),
                    settings=settings,
                    on_clip=clip_bar.update,
                    annotation=annotations[video],
                )
            _publish(made, inbox, target)
            written.append(layout.full_location(inbox.root, target))
    return written


def _publish(made: Path, inbox: Storage, key: str) -> None:
    """One atomic write of a finished file, mapped rather than read into memory (files reach gigabytes)."""
    with made.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            inbox.put(key, view)
        finally:
            view.release()
    made.unlink()
