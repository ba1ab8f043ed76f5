"""Which caption models a window contributes, in the order NeMo's writer considers them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def caption_models_in_order(configured: Sequence[str] | None, captions: Mapping[str, str]) -> list[str]:
    """The configured models present in `captions`, in configured order; every present model if unset."""
    if configured is None:
        return list(captions)
    return [model for model in configured if model in captions]
