"""Where bytes live: a small interface (put atomically, stat, read, delete, list, lock) and its backends.

`open_storage(url)` is the one way in: the URL's scheme picks the backend from a small table, and a
backend's module (and its client library) is imported only when a URL asks for it, as fsspec's
registry and `pyarrow.fs.FileSystem.from_uri` do. A new backend is a module with an `open_<scheme>`
factory and a row in `BACKENDS`; a lease comes with it for free if it implements `ConditionalWrites`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from clip_assets.storage.base import ConditionalWrites, Lease, ObjectInfo, Storage, StorageError, read_if_exists
from clip_assets.storage.local import LocalStorage

# scheme -> (module, factory); the factory takes the URL and that scheme's options.
BACKENDS: dict[str, tuple[str, str]] = {
    "file": ("clip_assets.storage.local", "open_local"),
    "s3": ("clip_assets.storage.s3", "open_s3"),
}


def url_scheme(url: str) -> str:
    """`s3` for `s3://bucket/prefix`; `file` for a plain path (relative paths resolve against the working directory)."""
    scheme, separator, _ = url.partition("://")
    return scheme.lower() if separator else "file"


def open_storage(url: str, **options: Mapping[str, Any]) -> Storage:
    """The storage at `url`. `options` are keyed by scheme, each the keyword arguments of that backend's
    factory (`s3={"connection": S3Connection(...), "options": S3Options(...)}`), so a caller that serves
    any URL passes every backend's settings and the URL picks the one that applies."""
    scheme = url_scheme(url)
    if scheme not in BACKENDS:
        known = ", ".join(f"{name}://" for name in sorted(BACKENDS))
        raise ValueError(f"storage URL {url!r}: unknown scheme {scheme!r}; use a local folder or one of {known}")
    module, factory = BACKENDS[scheme]
    backend: Storage = getattr(importlib.import_module(module), factory)(url, **options.get(scheme, {}))
    return backend


__all__ = [
    "BACKENDS",
    "ConditionalWrites",
    "Lease",
    "LocalStorage",
    "ObjectInfo",
    "Storage",
    "StorageError",
    "open_storage",
    "read_if_exists",
    "url_scheme",
]
