"""A record of every failed video: why each failed partition failed, kept in the output until it succeeds.

A curator running thousands of partitions lists what failed and why (`clip-assets failures`, the
dataset summary) without reading run logs. Each failed partition has one JSON document under
`_clip_assets/video_errors/` (Cosmos Curator keeps `video_errors/`): per error, the families it
failed, the file, row, clip id and field when the error names them, the message, and the time and run
that hit it. A later run that writes the partition's families clears their errors; the record goes
with the last of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError
from clip_assets.storage import Storage, read_if_exists

FAILURE_FORMAT = 1


@dataclass(frozen=True)
class FailureDetail:
    """One error of a partition's run and the families it failed."""

    families: tuple[str, ...]
    error_type: str
    message: str
    file: str
    field: str | None = None
    row: int | None = None
    clip_id: str | None = None

    @classmethod
    def of(cls, families: Sequence[str], error: Exception, source: str) -> FailureDetail:
        """The error's own file, field and row when it names them (a bad input), else the partition's file."""
        if isinstance(error, ProcessedVideoError):
            return cls(
                tuple(families), type(error).__name__, str(error), error.file, error.field, error.row, error.clip_id
            )
        return cls(tuple(families), type(error).__name__, str(error), source)

    @property
    def reason(self) -> str:
        """What failures are grouped by in the summary: the error's kind and the field it names."""
        return f"{self.error_type} in {self.field}" if self.field else self.error_type


@dataclass(frozen=True)
class PartitionFailure:
    partition_key: str
    source: str
    run_id: str
    time: str  # ISO 8601, UTC, of the run that recorded the last error
    errors: tuple[FailureDetail, ...]

    def to_bytes(self) -> bytes:
        document = {"format": FAILURE_FORMAT, **asdict(self)}
        document["partition"] = document.pop("partition_key")
        return json.dumps(document, indent=2).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionFailure:
        document = json.loads(data)
        errors = tuple(FailureDetail(**{**error, "families": tuple(error["families"])}) for error in document["errors"])
        return cls(document["partition"], document["source"], document["run_id"], document["time"], errors)


def record_failures(
    storage: Storage,
    partition_key: str,
    source: str,
    errors: dict[str, Exception],
    families: Sequence[str],
    run_id: str,
) -> None:
    """After a run of `families` of the partition: their errors replace theirs in its record; errors of
    families this run did not write are kept; no errors left, no record."""
    key = layout.video_error_key(partition_key)
    previous = _read(storage, key)
    kept = [e for e in previous.errors if not set(e.families) & set(families)] if previous else []
    by_error: dict[int, list[str]] = {}
    for family, error in errors.items():  # one input problem fails every family: one entry
        by_error.setdefault(id(error), []).append(family)
    found = {id(error): error for error in errors.values()}
    details = kept + [FailureDetail.of(names, found[identity], source) for identity, names in by_error.items()]
    if details:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        storage.put(key, PartitionFailure(partition_key, source, run_id, now, tuple(details)).to_bytes())
    elif previous is not None:
        storage.delete(key)


def load_failures(storage: Storage) -> Iterator[PartitionFailure]:
    """Every failure record in the output, oldest partition key first."""
    records = [info.key for info in storage.list(layout.VIDEO_ERRORS) if info.key.endswith(".json")]
    failures = [record for record in (_read(storage, key) for key in records) if record is not None]
    yield from sorted(failures, key=lambda failure: failure.partition_key)


def _read(storage: Storage, key: str) -> PartitionFailure | None:
    data = read_if_exists(storage, key)
    if data is None:
        return None
    try:
        return PartitionFailure.from_bytes(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{storage.root}/{key}: not a failure record ({exc})") from exc
