"""The unit every builder produces and the report of what it skipped and why."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_MAX_WARNINGS = 50


@dataclass(frozen=True)
class Artifact:
    """Bytes destined for one key of the output tree (a view of the input's bytes for media: no copy)."""

    key: str
    data: bytes | memoryview


@dataclass
class BuildReport:
    """Counts and warnings a builder collects, shown as run logs and materialization metadata.

    Warnings mirror NeMo's log lines (a missing WebP or embedding is logged and skipped); only the
    first few are kept so a video with a million bad clips cannot flood the event log.
    """

    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    num_warnings: int = 0
    # One representative artifact (the first preview) for the UI to show.
    sample: Artifact | None = None

    def warn(self, message: str) -> None:
        self.num_warnings += 1
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)


def json_artifact(key: str, document: dict[str, Any]) -> Artifact:
    """JSON the way NeMo writes it: indented, keys in insertion order."""
    return Artifact(key, json.dumps(document, indent=4).encode("utf-8"))
