"""Clip ids: upstream's when given, otherwise derived exactly as NeMo Curator's clipping stages do."""

from __future__ import annotations

import uuid


def derive_clip_uuid(source_video: str, span_start: float, span_end: float, framerate: float) -> str:
    """NeMo's rule: `uuid5(NAMESPACE_URL, f"{source_video}_{start_frame}_{end_frame}")`.

    Frames are `int(seconds * framerate)`, truncated like NeMo does, so a re-derived id matches the
    id NeMo would have given the same span.
    """
    start_frame = int(span_start * framerate)
    end_frame = int(span_end * framerate)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source_video}_{start_frame}_{end_frame}"))


def canonical_uuid(value: str) -> str:
    """The lowercase hyphenated form NeMo writes (`str(UUID)`); raises ValueError when not a UUID.

    Ids become file names, so anything that is not exactly a UUID is refused rather than escaped.
    """
    parsed = uuid.UUID(value)
    text = str(parsed)
    if value.lower().replace("-", "") != text.replace("-", ""):
        raise ValueError(f"{value!r} is not a UUID")
    return text
