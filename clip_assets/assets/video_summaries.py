"""`processed_videos/` and `processed_clip_chunks/`: per-video metadata and per-chunk stats."""

from collections.abc import Iterable

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.video_summary import build_video_summary
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import ValidatedVideo
from clip_assets.contract import schema

# Captions only: which clips have an MP4, a WebP or an embedding is known from inspection.
_COLUMNS = [schema.WINDOWS]


@family_asset(
    name="video_summaries",
    kinds={"json"},
    description="Per-video JSON (processed_videos/{rel}.json) and per-chunk stats "
    "(processed_clip_chunks/{rel}_{chunk}.json); written on dry runs too.",
)
def video_summaries(video: ValidatedVideo, report: BuildReport) -> Iterable[Artifact]:
    return build_video_summary(video.clips(_COLUMNS), video.info, video.settings, report, video.inspection.facts)
