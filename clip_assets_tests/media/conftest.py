"""Real media shared by the media tests: the sample videos, written and ingested once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_assets.producer.ingest import ingest_paths
from clip_assets.producer.synthetic import write_sample_videos
from clip_assets.storage import LocalStorage


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample_videos(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def sample_root(sample_videos: list[Path]) -> Path:
    return sample_videos[0].parent.parent


@pytest.fixture(scope="session")
def ingested(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Processed-video file per sample key (`cam1/street walk.mp4`), made with default settings."""
    inbox = tmp_path_factory.mktemp("inbox")
    written = [Path(location) for location in ingest_paths([sample_root], LocalStorage(inbox), progress=False)]
    return {path.relative_to(inbox).as_posix().removesuffix(".parquet"): path for path in written}
