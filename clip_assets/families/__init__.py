"""The output families: one module each (builder, the columns it reads, verifier, cross-checks, metadata).

`FAMILIES` is the one list the Dagster assets and checks, the engine, the dataset summary and the
benchmarks iterate. Adding a family is a module with a `FAMILY = OutputFamily(...)`, its keys in
`clip_assets.layout`, and a line here.
"""

from clip_assets.families import clip_embeddings, clip_files, clip_metadata, clip_previews, video_summaries
from clip_assets.families.base import Artifact, BuildReport, OutputFamily

FAMILIES: tuple[OutputFamily, ...] = (
    clip_files.FAMILY,
    clip_previews.FAMILY,
    clip_embeddings.FAMILY,
    clip_metadata.FAMILY,
    video_summaries.FAMILY,
)

__all__ = ["FAMILIES", "Artifact", "BuildReport", "OutputFamily"]
