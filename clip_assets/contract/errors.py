"""One error type for every way a processed-video file can be wrong."""

from __future__ import annotations

import functools
from typing import Any


class ProcessedVideoError(ValueError):
    """A processed-video file that clip-assets refuses to turn into outputs.

    The message always names the file and the field, and the row and clip id when the problem is in
    one clip, because the person reading it in the Dagster UI has to find and fix the producer's bug.
    """

    def __init__(
        self,
        file: str,
        field: str,
        problem: str,
        *,
        row: int | None = None,
        clip_id: str | None = None,
    ) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        self.row = row
        self.clip_id = clip_id
        where = f"{file}"
        if row is not None:
            where += f", row {row}"
            if clip_id:
                where += f" (clip {clip_id})"
        super().__init__(f"{where}, field '{field}': {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt from its parts: a partition written in another process (a Ray task) reports it as itself."""
        return (
            functools.partial(type(self), row=self.row, clip_id=self.clip_id),
            (self.file, self.field, self.problem),
        )
