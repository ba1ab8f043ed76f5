"""The content type each kind of output is stored with, on every object store.

What a bucket served as a static site (the gallery) tells browsers: without a type, S3 answers
`binary/octet-stream`, Azure and GCS `application/octet-stream`, and a browser downloads the page
instead of showing it.
"""

from __future__ import annotations

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".png": "image/png",
    ".tar": "application/x-tar",
}
DEFAULT = "application/octet-stream"


def content_type(key: str) -> str | None:
    """The type of `key` by its extension; None for one this table does not know."""
    return CONTENT_TYPES.get(key[key.rfind(".") :].lower()) if "." in key else None
