"""`clips/` and `filtered_clips/`: each clip's MP4, streamed from the inbox to storage."""

from collections.abc import Iterable

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.clip_files import build_clip_files
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import ValidatedVideo
from clip_assets.contract import schema


@family_asset(
    name="clip_files",
    kinds={"mp4"},
    description="Clip MP4s: clips/{uuid}.mp4 for passed clips, filtered_clips/{uuid}.mp4 for filtered ones "
    "(skipped when upload_clips is off or on a dry run).",
)
def clip_files(video: ValidatedVideo, report: BuildReport) -> Iterable[Artifact]:
    return build_clip_files(video.clips([schema.MP4]), video.settings, report)
