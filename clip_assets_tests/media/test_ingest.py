"""The producer: NeMo's clipping and windowing rules, discovery, and real ingests read back."""

from __future__ import annotations

import io
import os
import shutil
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clip_assets.contract import ClipRecord, ProcessedVideoReader
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.contract.records import ChunkCounters
from clip_assets.engine.inspection import inspect_video
from clip_assets.media.probe import MediaError, probe_mp4
from clip_assets.producer.descriptor import COLOR_GRID_ALGORITHM, FRAME_DIFFERENCE_MEAN
from clip_assets.producer.ingest import (
    IngestSettings,
    chunk_count,
    clip_frame_range,
    find_videos,
    ingest_paths,
    ingest_video,
    plan_clip_spans,
    plan_windows,
)
from clip_assets.producer.synthetic import SAMPLE_VIDEOS, write_video
from clip_assets.storage import LocalStorage

MOVING = ("cam1/street walk.mp4", "cam2/bouncing box.mp4")
STILL = "static/still frame.mp4"
# 1 s clips every 0.5 s of a 2 s video: [0,1] [0.5,1.5] [1,2]; the 0.5 s tail [1.5,2] is too short.
OVERLAPPING = IngestSettings(clip_len_s=1.0, stride_s=0.5, min_clip_len_s=0.75, window_frames=8, clips_per_chunk=2)


def read_clips(path: Path) -> list[ClipRecord]:
    with ProcessedVideoReader(str(path), path.name) as reader:
        return list(reader.iter_clips())


def decode(mp4: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# --- pure rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "settings", "spans"),
    [
        (5.0, IngestSettings(), [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]),
        (4.5, IngestSettings(), [(0.0, 2.0), (2.0, 4.0)]),
        (0.5, IngestSettings(), []),
        (2.0, OVERLAPPING, [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]),
    ],
)
def test_clip_spans_follow_nemos_fixed_stride(
    duration: float, settings: IngestSettings, spans: list[tuple[float, float]]
) -> None:
    assert plan_clip_spans(duration, settings) == spans


@given(
    duration=st.floats(0, 60),
    clip_len=st.floats(0.1, 10),
    stride=st.floats(0.1, 10),
    min_fraction=st.floats(0, 1),
)
def test_clip_spans_stay_inside_the_video_and_respect_the_lengths(
    duration: float, clip_len: float, stride: float, min_fraction: float
) -> None:
    settings = IngestSettings(clip_len_s=clip_len, stride_s=stride, min_clip_len_s=clip_len * min_fraction)
    spans = plan_clip_spans(duration, settings)

    for start, end in spans:
        assert 0 <= start < end <= duration
        assert settings.min_clip_len_s <= end - start <= clip_len + 1e-9  # one rounding of start + len
    assert [start for start, _ in spans] == sorted({start for start, _ in spans})


@pytest.mark.parametrize(
    ("num_frames", "window_frames", "windows"),
    [
        (48, 256, [(0, 47)]),
        (3, 256, []),
        (600, 256, [(0, 255), (256, 599)]),
        (700, 256, [(0, 255), (256, 511), (512, 699)]),
        (24, 8, [(0, 7), (8, 15), (16, 23)]),
    ],
)
def test_windows_follow_nemos_compute_windows(
    num_frames: int, window_frames: int, windows: list[tuple[int, int]]
) -> None:
    assert plan_windows(num_frames, window_frames) == windows


@given(num_frames=st.integers(4, 5000), window_frames=st.integers(1, 600))
def test_windows_cover_every_frame_once_with_inclusive_ends(num_frames: int, window_frames: int) -> None:
    windows = plan_windows(num_frames, window_frames)

    assert windows[0][0] == 0
    assert windows[-1][1] == num_frames - 1
    assert all(next_start == end + 1 for (_, end), (next_start, _) in pairwise(windows))
    assert all(end - start + 1 < 2 * window_frames for start, end in windows)


def test_clip_frames_are_the_frames_whose_timestamps_fall_in_the_span() -> None:
    assert clip_frame_range((0.0, 2.0), 24.0) == range(0, 48)
    assert clip_frame_range((2.0, 4.0), 24.0) == range(48, 96)
    assert clip_frame_range((2.0, 4.0), 30000 / 1001) == range(60, 120)


def test_chunk_count() -> None:
    assert [chunk_count(n, 0) for n in (0, 1, 9)] == [0, 1, 1]
    assert [chunk_count(n, 4) for n in (0, 4, 5, 9)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "bad",
    [{"clip_len_s": 0}, {"stride_s": -1}, {"min_clip_len_s": 3}, {"preview_fps": float("nan")}, {"crf": 52}],
)
def test_settings_refuse_values_that_cannot_work(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        IngestSettings(**bad)


# --- discovery ----------------------------------------------------------------------------------


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_directories_are_searched_for_videos_keyed_relative_to_them(tmp_path: Path) -> None:
    for name in ("a/one.mp4", "a/b/two.MOV", "a/notes.txt", "a/._one.mp4", "a/c/three.webm"):
        touch(tmp_path / name)

    keys = [key for _, key in find_videos([tmp_path / "a"])]

    assert keys == ["b/two.MOV", "c/three.webm", "one.mp4"]


def test_files_are_keyed_by_name_or_relative_to_the_input_root(tmp_path: Path) -> None:
    video = touch(tmp_path / "cam1" / "2024" / "street walk.mp4")

    assert find_videos([video]) == [(video, "street walk.mp4")]
    assert find_videos([video], input_root=tmp_path) == [(video, "cam1/2024/street walk.mp4")]


def test_discovery_refuses_collisions_missing_paths_and_videos_outside_the_root(tmp_path: Path) -> None:
    first, second = touch(tmp_path / "x" / "v.mp4"), touch(tmp_path / "y" / "v.mp4")

    with pytest.raises(ValueError, match=r"both be ingested as 'v\.mp4'"):
        find_videos([first, second])
    with pytest.raises(FileNotFoundError):
        find_videos([tmp_path / "missing.mp4"])
    with pytest.raises(ValueError, match="not below the input root"):
        find_videos([first], input_root=tmp_path / "y")


# --- ingesting the sample videos ------------------------------------------------------------------


def test_every_sample_becomes_a_valid_processed_video_file(ingested: dict[str, Path], sample_root: Path) -> None:
    assert sorted(ingested) == sorted(SAMPLE_VIDEOS)
    for key, path in ingested.items():
        with ProcessedVideoReader(str(path), key) as reader:
            summary = inspect_video(reader)
            info = reader.info
        assert summary.num_clips == info.num_total_clips == 3
        assert info.source_video == (sample_root / key).resolve().as_posix()
        assert (info.width, info.height, info.framerate, info.num_frames) == (320, 240, 24.0, 120)
        assert (info.duration, info.video_codec, info.pixel_format) == (5.0, "h264", "yuv420p")
        assert info.num_clip_chunks == 1
        assert info.chunks == (ChunkCounters(0, 3 if key == STILL else 0, 0),)


def test_clips_are_nemo_spans_with_nemo_ids_and_playable_mp4s(ingested: dict[str, Path]) -> None:
    for key, path in ingested.items():
        clips = read_clips(path)
        source_video = ProcessedVideoReader(str(path), key).info.source_video

        assert [(c.span_start, c.span_end) for c in clips] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
        assert [c.uuid for c in clips] == [
            derive_clip_uuid(source_video, c.span_start, c.span_end, 24.0) for c in clips
        ]
        for clip, expected_frames in zip(clips, (48, 48, 24), strict=True):
            assert clip.mp4 is not None
            frames = decode(clip.mp4)
            assert len(frames) == expected_frames
            assert frames[0].shape == (240, 320, 3)
            assert probe_mp4(clip.mp4).num_frames == expected_frames


def test_moving_clips_pass_with_animated_previews_and_an_embedding(ingested: dict[str, Path]) -> None:
    for key in MOVING:
        for clip in read_clips(ingested[key]):
            assert not clip.filtered
            assert clip.extra_metadata is not None and clip.extra_metadata[FRAME_DIFFERENCE_MEAN] > 0.5
            assert clip.motion_score_global_mean is None  # NeMo's motion-vector key: another scale
            assert [(w.start_frame, w.end_frame) for w in clip.windows] == [(0, round(clip.duration * 24) - 1)]
            for window in clip.windows:
                assert window.captions == {} and window.enhanced_captions == {}
                assert window.webp is not None
                preview = Image.open(io.BytesIO(window.webp))
                assert preview.format == "WEBP"
                assert preview.is_animated and preview.n_frames > 1
                assert preview.size == (320, 240)
            vector = clip.embeddings[COLOR_GRID_ALGORITHM]
            assert vector.shape == (48,) and vector.dtype == np.float32
            assert np.isfinite(vector).all()
            assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_still_clips_are_filtered_by_motion_and_keep_their_mp4(ingested: dict[str, Path]) -> None:
    for clip in read_clips(ingested[STILL]):
        assert (clip.filtered, clip.filtered_by) == (True, "motion")
        assert clip.extra_metadata is not None and clip.extra_metadata[FRAME_DIFFERENCE_MEAN] < 0.5
        assert clip.motion_score_global_mean is None
        assert clip.mp4 is not None
        assert clip.windows == [] and clip.embeddings == {}


# --- other settings, other inputs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two-second versions of the bouncing box and the still frame."""
    root = tmp_path_factory.mktemp("short")
    return {key: write_video(root / key, SAMPLE_VIDEOS[key], num_frames=48) for key in (MOVING[1], STILL)}


def test_overlapping_clips_get_the_right_frames_chunks_and_windows(
    short_videos: dict[str, Path], tmp_path: Path
) -> None:
    video = short_videos[MOVING[1]]
    path = ingest_video(video, tmp_path / "box.parquet", source_video=video.as_posix(), settings=OVERLAPPING)
    clips = read_clips(path)
    source_frames = decode(video.read_bytes())

    assert [c.chunk_index for c in clips] == [0, 0, 1]
    assert ProcessedVideoReader(str(path), "box").info.num_clip_chunks == 2
    for clip, first_source_frame in zip(clips, (0, 12, 24), strict=True):
        assert clip.mp4 is not None
        frames = decode(clip.mp4)
        assert len(frames) == 24
        distances = [np.abs(frames[0].astype(int) - f.astype(int)).mean() for f in source_frames]
        assert int(np.argmin(distances)) == first_source_frame
        assert [(w.start_frame, w.end_frame) for w in clip.windows] == [(0, 7), (8, 15), (16, 23)]
        assert all(w.webp is not None and Image.open(io.BytesIO(w.webp)).height == 240 for w in clip.windows)


def test_motion_counters_are_kept_per_chunk(short_videos: dict[str, Path], tmp_path: Path) -> None:
    video = short_videos[STILL]
    path = ingest_video(video, tmp_path / "still.parquet", source_video=video.as_posix(), settings=OVERLAPPING)

    with ProcessedVideoReader(str(path), "still") as reader:
        assert reader.info.chunks == (ChunkCounters(0, 2, 0), ChunkCounters(1, 1, 0))


def test_ingest_paths_takes_files_and_shows_progress(
    short_videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = short_videos[STILL]
    written = ingest_paths([video], LocalStorage(tmp_path / "inbox"), progress=True)

    assert written == [(tmp_path / "inbox" / "still frame.mp4.parquet").as_posix()]
    assert "video" in capsys.readouterr().err


def test_a_file_that_is_not_a_video_is_refused_by_name(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")

    with pytest.raises(MediaError, match=r"fake\.mp4"):
        ingest_paths([fake], LocalStorage(tmp_path / "inbox"), progress=False)
    assert not (tmp_path / "inbox").exists()


def test_up_to_date_videos_are_not_ingested_again(sample_root: Path, tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    shutil.copyfile(sorted(sample_root.rglob("*.mp4"))[0], video)
    inbox = LocalStorage(tmp_path / "inbox")
    first = ingest_paths([video], inbox, progress=False)
    stamp = Path(first[0]).stat().st_mtime_ns
    again = ingest_paths([video], inbox, progress=False, skip_up_to_date=True)
    assert again == first and Path(first[0]).stat().st_mtime_ns == stamp
    os.utime(video, ns=(stamp + 10**9, stamp + 10**9))  # the source changed after its file was written
    ingest_paths([video], inbox, progress=False, skip_up_to_date=True)
    assert Path(first[0]).stat().st_mtime_ns > stamp


def test_the_ingest_command_honours_skip_up_to_date(sample_root: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from clip_assets.cli import main

    video = tmp_path / "v.mp4"
    shutil.copyfile(sorted(sample_root.rglob("*.mp4"))[0], video)
    inbox = tmp_path / "inbox"
    args = ["ingest", str(video), "--inbox", str(inbox), "--no-progress", "--skip-up-to-date"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    stamp = (inbox / "v.mp4.parquet").stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and (inbox / "v.mp4.parquet").stat().st_mtime_ns == stamp
    refused = CliRunner().invoke(main, ["ingest", str(video), "--inbox", str(inbox), "--clip-len", "0.5"])
    assert refused.exit_code == 1 and "min_clip_len_s" in refused.output and "Traceback" not in refused.output
