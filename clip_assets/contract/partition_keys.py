"""Partition keys: a processed video's inbox-relative path without `.parquet`, made acceptable to Dagster.

Dagster refuses keys containing `...` or control characters. Such characters are percent-encoded,
and `%` itself always is, so the mapping is reversible and two files never share a key.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

SUFFIX = ".parquet"
_DOT_RUN = re.compile(r"\.{3,}")


def _encode_char(ch: str) -> str:
    if ch == "%" or ord(ch) < 32 or ord(ch) == 127:
        return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
    return ch


def encode_partition_key(relative_path: str) -> str:
    """`cam1/2024/street walk.mp4.parquet` -> `cam1/2024/street walk.mp4`."""
    if not relative_path.endswith(SUFFIX):
        raise ValueError(f"{relative_path!r} is not a {SUFFIX} file")
    stem = relative_path[: -len(SUFFIX)]
    encoded = "".join(_encode_char(ch) for ch in stem)
    return _DOT_RUN.sub(lambda m: "%2E" * len(m.group()), encoded)


def decode_partition_key(partition_key: str) -> str:
    """The inbox-relative path of the file behind a partition key."""
    return unquote(partition_key, errors="strict") + SUFFIX
