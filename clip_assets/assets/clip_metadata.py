"""`metas/v0/`: one JSON document per passed and filtered clip, MP4 facts probed in process."""

from collections.abc import Iterable

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.clip_metadata import build_clip_metadata
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import ValidatedVideo
from clip_assets.contract import schema

# No MP4 bytes: inspection probed every clip and kept the facts.
_COLUMNS = [
    schema.WINDOWS,
    schema.MOTION_GLOBAL_MEAN,
    schema.MOTION_PER_PATCH_MIN_256,
    schema.AESTHETIC_SCORE,
    schema.ERRORS,
    schema.EXTRA_METADATA,
]


@family_asset(
    name="clip_metadata",
    kinds={"json"},
    description="Clip metadata JSON (metas/v0/{uuid}.json): span, source facts, probed MP4 facts with the exact "
    "frame count, scores, errors, windows with captions, validity.",
)
def clip_metadata(video: ValidatedVideo, report: BuildReport) -> Iterable[Artifact]:
    return build_clip_metadata(video.clips(_COLUMNS), video.info, video.settings, report, video.inspection.facts)
