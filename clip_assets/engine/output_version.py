"""What a partition's outputs are a function of, as one digest: input version, settings, code, libraries.

A manifest records it; a re-run whose digest is unchanged, and whose recorded objects are untouched,
can skip reading the input at all, because the outputs it would write are exactly those already there.
The code part covers every module of the package (a change anywhere costs one full re-run, never a
stale output) and the libraries whose versions shape output bytes (Parquet writer, pickle, probing).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

from clip_assets.settings import WriterSettings

_LIBRARIES = ("pyarrow", "numpy", "av", "pillow")


@functools.cache
def code_digest() -> str:
    """sha256 over the package's own source files and the versions of the libraries that shape bytes."""
    hasher = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        hasher.update(path.relative_to(package).as_posix().encode())
        hasher.update(path.read_bytes())
    for library in _LIBRARIES:
        hasher.update(f"{library}=={metadata.version(library)}".encode())
    return hasher.hexdigest()


def output_version(input_fingerprint: str, settings: WriterSettings) -> str:
    """Equal digests mean byte-identical outputs for every family of the partition."""
    shaping = {
        setting.name: getattr(settings, setting.name)
        for setting in dataclasses.fields(settings)
        if setting.metadata.get("in_output_version", True)
    }
    document = {
        "input": input_fingerprint,
        "settings": shaping,
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
