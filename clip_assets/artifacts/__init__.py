"""Pure builders: clip records in, artifacts (layout key + bytes) out, one module per output family.

No Dagster and no I/O here, so every rule of NeMo's writer is testable with plain data.
"""

from clip_assets.artifacts.base import Artifact, BuildReport

__all__ = ["Artifact", "BuildReport"]
