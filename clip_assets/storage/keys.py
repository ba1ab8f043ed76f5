"""The one check every key passes before a backend touches it: a plain relative path below the root."""

from __future__ import annotations

from clip_assets.layout import UNSAFE_SEGMENTS, LayoutError

# S3's limit for a whole key; local file systems allow more, and a key must fit both.
MAX_KEY_BYTES = 1024


class UnsafeKeyError(LayoutError):
    """A key that could leave the storage root or name something other than one object."""


def check_key(key: str) -> str:
    """Refuse any key that is not a plain relative path below the root; returns it unchanged."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"unsafe output key {key!r}")
    if any(part in UNSAFE_SEGMENTS for part in key.split("/")):
        raise UnsafeKeyError(f"unsafe output key {key!r}")
    return key
