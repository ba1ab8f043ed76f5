"""The NeMo Curator hand-off: a pipeline stage that writes processed videos into clip-assets' inbox.

Importing this package needs NeMo Curator (installed as the README's "NeMo Curator users" section
says); nothing else in clip_assets imports it. The mapping rules (`clip_assets.nemo.mapping`) import
NeMo only where they build its objects.
"""

from clip_assets.nemo.stage import ProcessedVideoWriterStage

__all__ = ["ProcessedVideoWriterStage"]
