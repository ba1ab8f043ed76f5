"""clip-assets: processed videos in, NeMo Curator-compatible curated outputs out, as Dagster assets.

The code location is `clip_assets.definitions` (`dagster dev -m clip_assets.definitions`, or `dg dev`
in the repository); importing the package itself loads nothing of Dagster, so the pure layers
(contract, layout, families, engine, storage) import without its start-up cost.
"""
