"""clip-assets: processed videos in, NeMo Curator-compatible curated outputs out, as Dagster assets.

The code location is `clip_assets.definitions` (`dagster dev -m clip_assets.definitions`, or `dg dev`
in the repository); importing the package itself loads nothing of Dagster, so the pure layers
(contract, layout, families, engine, storage) import without its start-up cost.
"""

import os

# pyarrow allocates through mimalloc, which by default returns freed pages to the system only after a
# delay (10 ms): while a run streams clip after clip, those pages pile up and count in the peak RSS.
# Returning them at once costs no measurable time and takes the peak of a 1 GB video from ~301 MB to
# ~275 MB (docs/performance.md, "Levers measured"). Set before pyarrow loads; an explicit value wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
