"""Which caption models a window contributes, in the order NeMo's writer considers them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clip_assets.contract import Window


def caption_models_in_order(configured: Sequence[str] | None, captions: Mapping[str, str]) -> list[str]:
    """The configured models present in `captions`, in configured order; every present model if unset."""
    if configured is None:
        return list(captions)
    return [model for model in configured if model in captions]


def has_caption(windows: Sequence[Window], configured: Sequence[str] | None) -> bool:
    """NeMo's `has_caption`: some window has a caption of a considered model (enhanced ones do not count)."""
    return any(caption_models_in_order(configured, w.captions) for w in windows)
