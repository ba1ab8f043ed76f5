"""`clip-assets failures`: the failure records as a table a curator reads in a terminal."""

from __future__ import annotations

from collections.abc import Sequence

from clip_assets.engine.failures import PartitionFailure

COLUMNS = ("partition", "families", "file", "row", "field", "message", "time", "run")
# A message longer than this is cut in the table (`--json` has it whole).
MESSAGE_WIDTH = 100


def failure_rows(failures: Sequence[PartitionFailure]) -> list[tuple[str, ...]]:
    """One row per error of each failed partition."""
    rows: list[tuple[str, ...]] = []
    for failure in failures:
        for error in failure.errors:
            message = f"{error.error_type}: {error.message}"
            if len(message) > MESSAGE_WIDTH:
                message = message[: MESSAGE_WIDTH - 3] + "..."
            rows.append(
                (
                    failure.partition_key,
                    ",".join(error.families),
                    error.file,
                    "" if error.row is None else str(error.row),
                    error.field or "",
                    message,
                    failure.time,
                    failure.run_id,
                )
            )
    return rows


def failure_table(failures: Sequence[PartitionFailure]) -> str:
    """The rows under a header, columns padded to their widest cell."""
    rows: list[tuple[str, ...]] = [COLUMNS, *failure_rows(failures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
