"""`clip-assets failures`: the failure records as a table a curator reads in a terminal, every reason whole."""

from __future__ import annotations

from collections.abc import Sequence

from clip_assets.cli.text import text_table
from clip_assets.engine.failures import PartitionFailure

COLUMNS = ("partition", "families", "file", "row", "field", "message", "time", "run")


def failure_rows(failures: Sequence[PartitionFailure]) -> list[tuple[str, ...]]:
    """One row per error of each failed partition."""
    rows: list[tuple[str, ...]] = []
    for failure in failures:
        for error in failure.errors:
            rows.append(
                (
                    failure.partition_key,
                    ",".join(error.families),
                    error.file,
                    "" if error.row is None else str(error.row),
                    error.field or "",
                    " ".join(f"{error.error_type}: {error.message}".split()),
                    failure.time,
                    failure.run_id,
                )
            )
    return rows


def failure_table(failures: Sequence[PartitionFailure]) -> str:
    """The rows under a header."""
    return text_table([COLUMNS, *failure_rows(failures)])
