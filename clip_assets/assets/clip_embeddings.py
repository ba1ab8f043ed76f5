"""`ce1_embd/`, `ce1_embd_parquet/` (or `iv2_*`, or the algorithm's own prefix): clip embeddings."""

from collections.abc import Iterable

from clip_assets.artifacts import Artifact, BuildReport
from clip_assets.artifacts.embeddings import build_embeddings
from clip_assets.assets.family import family_asset
from clip_assets.assets.opening import ValidatedVideo
from clip_assets.contract import schema


@family_asset(
    name="clip_embeddings",
    kinds={"pickle", "parquet"},
    description="Embeddings of the configured algorithm: a pickle per passed clip ({prefix}_embd/{uuid}.pickle) "
    "and a Parquet file per clip chunk ({prefix}_embd_parquet/{uuid5(video_chunk)}.parquet, columns id, embedding).",
)
def clip_embeddings(video: ValidatedVideo, report: BuildReport) -> Iterable[Artifact]:
    return build_embeddings(video.clips([schema.EMBEDDINGS]), video.info.source_video, video.settings, report)
