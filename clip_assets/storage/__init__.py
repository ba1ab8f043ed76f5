"""Where bytes live: a small interface (put atomically, stat, read, delete, list, lock) and its backends.

`open_storage(url, storage_options)` is the one way in, from every caller (the Dagster resources, the
CLI, the NeMo stage, `open_dataset`): the URL's scheme picks a `Backend` entry, whose module (and client
library) is imported only when a URL asks for it, as fsspec's registry and
`pyarrow.fs.FileSystem.from_uri` do, with an install hint when the library is missing. `storage_options`
is one flat mapping (option name -> value, as Lance and fsspec take them); each backend takes the
names its option types declare. A new backend is a module (a `Storage`, its option types, an
`open_<scheme>` factory) and an entry in `BACKENDS`; a lease comes with it if it implements
`ConditionalWrites`, and Lance reaches its tables through its `object_store_options()`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from clip_assets.storage.base import (
    ConditionalWrites,
    Lease,
    ObjectInfo,
    Storage,
    StorageError,
    holds,
    put_if_changed,
    read_if_exists,
)
from clip_assets.storage.local import LocalStorage
from clip_assets.storage.options import StorageOptionError, option_names, parse_options


class UnknownStorageError(ValueError):
    """A URL no backend serves, or whose backend's library is not installed; the message says what to do."""


@dataclass(frozen=True)
class Backend:
    """One storage backend: the URL schemes it serves and where its code is.

    `options` name the option dataclasses of `module` whose fields are the backend's storage options;
    `factory(url, *options)` opens it. `requires` is the client library the module imports (`imports`
    are its import names, when they are not the library's own), and `install` what to run when it is
    missing.
    """

    schemes: tuple[str, ...]
    name: str
    module: str
    factory: str
    options: tuple[str, ...] = ()
    requires: str = ""
    install: str = ""
    imports: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise self._missing(exc) from None

    def open(self, url: str, options: list[Any]) -> Storage:
        """The factory's storage; a module that imports its client library only here (so that every
        backend's option names are known without it) gets the same install hint when it is missing."""
        try:
            storage: Storage = getattr(self.load(), self.factory)(url, *options)
        except ImportError as exc:
            raise self._missing(exc) from None
        return storage

    def _missing(self, exc: ImportError) -> Exception:
        """The install hint when `exc` is about this backend's client library (a module it imports, or a
        package on the way to one: `azure` for `azure.storage.blob`); else `exc` itself."""
        imports = self.imports or (self.requires.replace("-", "_"),)
        missing = exc.name or ""
        if self.requires and missing and any(name == missing or name.startswith(f"{missing}.") for name in imports):
            return UnknownStorageError(f"{self.name} needs {self.requires}, which is not installed: {self.install}")
        return exc

    def option_types(self) -> tuple[type, ...]:
        module = self.load() if self.options else None
        return tuple(getattr(module, name) for name in self.options)


BACKENDS: tuple[Backend, ...] = (
    Backend(("file",), "local storage", "clip_assets.storage.local", "open_local"),
    Backend(
        ("s3",),
        "S3",
        "clip_assets.storage.s3",
        "open_s3",
        options=("S3Connection", "S3Options"),
        requires="boto3",
        install="pip install boto3 (a dependency of clip-assets: reinstall it)",
        imports=("boto3", "botocore"),
    ),
    Backend(
        ("az", "abfs", "abfss"),
        "Azure Blob Storage",
        "clip_assets.storage.azure",
        "open_azure",
        options=("AzureConnection", "AzureOptions"),
        requires="azure-storage-blob",
        install="pip install 'clip-assets[azure]'",
        imports=("azure.storage.blob", "azure.core", "azure.identity"),
    ),
    Backend(
        ("gs",),
        "Google Cloud Storage",
        "clip_assets.storage.gcs",
        "open_gcs",
        options=("GcsConnection", "GcsOptions"),
        requires="google-cloud-storage",
        install="pip install 'clip-assets[gcs]'",
        imports=("google.cloud.storage", "google.api_core", "google.auth", "google_crc32c"),
    ),
)


def url_scheme(url: str) -> str:
    """`s3` for `s3://bucket/prefix`, `gs` for `gs://bucket/prefix`; `file` for a plain path (relative
    paths resolve against the working directory)."""
    scheme, separator, _ = url.partition("://")
    return scheme.lower() if separator else "file"


def backend_for(url: str) -> Backend:
    """The entry serving `url`, or an error naming the URL and the schemes there are."""
    scheme = url_scheme(url)
    for backend in BACKENDS:
        if scheme in backend.schemes:
            return backend
    known = ", ".join(f"{scheme}://" for backend in BACKENDS for scheme in backend.schemes if scheme != "file")
    raise UnknownStorageError(f"storage URL {url!r}: unknown scheme {scheme!r}; use a local folder or one of {known}")


def open_storage(url: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """The storage at `url`, reached as `storage_options` say (names of any backend's options; this
    URL's backend takes its own). Credentials are best left to each cloud's standard chain."""
    backend = backend_for(url)
    options = dict(storage_options or {})
    option_types = backend.option_types()
    others = {name for other in BACKENDS if other is not backend and options for name in _names(other)}
    built = parse_options(backend.name, option_types, options, others)
    return backend.open(url, built)


def _names(backend: Backend) -> tuple[str, ...]:
    """Another backend's option names; one whose library is missing cannot be this mapping's target."""
    try:
        return option_names(backend.option_types())
    except UnknownStorageError:
        return ()


@dataclass(frozen=True)
class StorageSpec:
    """A storage as its URL and options: what a process that must open it itself (a Ray task, a NeMo
    worker) is handed instead of a client. The options may hold credentials: they stay out of repr."""

    url: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def open(self) -> Storage:
        return open_storage(self.url, self.options)


__all__ = [
    "BACKENDS",
    "Backend",
    "ConditionalWrites",
    "Lease",
    "LocalStorage",
    "ObjectInfo",
    "Storage",
    "StorageError",
    "StorageOptionError",
    "StorageSpec",
    "UnknownStorageError",
    "backend_for",
    "holds",
    "open_storage",
    "put_if_changed",
    "read_if_exists",
    "url_scheme",
]
