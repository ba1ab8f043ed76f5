"""What an output family is: one object holding everything the rest of the package needs to know of it.

A family turns a processed video's clips into artifacts (layout key + bytes), says which contract
columns it reads, how to tell that what it wrote is still sound, what it promises about the other
families' files, and what it adds to a materialization's metadata. The Dagster assets and checks, the
engine's write path, the dataset summary and the benchmarks are all made from the list of these
(`clip_assets.families.FAMILIES`). No Dagster and no I/O here: builders are pure, verifiers get bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from clip_assets.contract import ClipRecord, VideoInfo
from clip_assets.media.probe import ClipProbe
from clip_assets.metadata import MetadataEntry
from clip_assets.settings import WriterSettings

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


@dataclass(frozen=True)
class ClipFacts:
    """What inspection learnt of a clip's heavy columns, so families need not read them again."""

    row: int
    mp4_bytes: int | None
    probe: ClipProbe | None
    webp_windows: frozenset[tuple[int, int]]
    embedding_algorithms: frozenset[str]
    # Where the clip's keys go: its chunk's files, and clips/ or filtered_clips/.
    chunk_index: int = 0
    filtered: bool = False

    @property
    def has_mp4(self) -> bool:
        return bool(self.mp4_bytes)

    @property
    def has_webp(self) -> bool:
        return bool(self.webp_windows)


@dataclass(frozen=True)
class VideoContext:
    """What a builder knows of the whole video before its first clip: metadata, settings, per-clip facts."""

    info: VideoInfo
    settings: WriterSettings
    facts: Mapping[str, ClipFacts]


class ClipBuilder(Protocol):
    """Fed a video's clips one at a time, in file order, then told the video ended.

    Push-shaped so one pass over the file feeds every selected family at once; each call returns the
    artifacts ready by then (media stream out per clip, per-chunk files at the end).
    """

    def add(self, clip: ClipRecord) -> Iterable[Artifact]: ...

    def finish(self) -> Iterable[Artifact]: ...


def build(builder: ClipBuilder, clips: Iterable[ClipRecord]) -> Iterator[Artifact]:
    """Every artifact of `clips`, lazily: the driver for one family on its own (tests, one-family tools)."""
    for clip in clips:
        yield from builder.add(clip)
    yield from builder.finish()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one stored object, as an asset check reports it."""

    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


class Damaged(ValueError):
    """Bytes that are present and match their hash but are not what the family promises."""


def verify_json(key: str, data: bytes) -> None:
    """The verifier of the families that write JSON documents: the bytes still parse."""
    try:
        json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(f"not JSON ({exc})") from None


@dataclass(frozen=True)
class RecordedOutputs:
    """One partition's outputs as its manifests record them, and a way to read them: a cross-check's view.

    `others` holds the other families' recorded keys (None where that family was never materialized).
    """

    family: str
    keys: frozenset[str]
    others: Mapping[str, frozenset[str] | None]
    read: Callable[[str], bytes]
    exists: Callable[[str], bool]
    root: str
    settings: WriterSettings

    def documents(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """This family's JSON documents under `prefix`, in key order; unreadable ones are skipped, since
        reading every object back (and naming what does not parse) is the check's first half."""
        for key in sorted(self.keys):
            if key.startswith(prefix):
                try:
                    document = json.loads(self.read(key))
                except (OSError, ValueError):
                    continue
                if isinstance(document, dict):
                    yield key, document


@dataclass(frozen=True)
class TableColumn:
    """A column of a table a family writes (for `dagster/column_schema`)."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class OutputFamily:
    """Everything about one output family; `clip_assets.families.FAMILIES` lists them all.

    - `columns`: the contract columns its builder reads (the identity columns always come along);
    - `builder`: a fresh `ClipBuilder` for one video;
    - `verify`: raises `Damaged` when bytes it wrote (and whose hash still matches) are not what it
      promises (an MP4 that does not demux, a pickle that is not an array);
    - `cross_check`: what its files promise about the other families' (a metadata JSON's
      `clip_location` exists, chunk counters agree with the files);
    - `check_clip`: refuses a clip before anything of its video is written (raises
      `ProcessedVideoError` naming file, row and field);
    - `describe`: metadata for a materialization once the artifacts are written;
    - `tables` / `row_count`: the columns of the tables it writes and how many rows it wrote;
    - `planned_keys`: every key its builder may write for a video, known before the first write (from
      inspection's facts; a superset is fine), recorded in the partition's intent record so that what a
      killed run wrote is found again.
    """

    name: str
    description: str
    kinds: frozenset[str]
    columns: frozenset[str]
    builder: Callable[[VideoContext, BuildReport], ClipBuilder]
    verify: Callable[[str, bytes], None]
    cross_check: Callable[[RecordedOutputs], list[Problem]] | None = None
    check_clip: Callable[[str, ClipRecord], None] | None = None
    describe: Callable[[BuildReport], Mapping[str, MetadataEntry]] | None = None
    tables: tuple[TableColumn, ...] = ()
    row_count: Callable[[BuildReport], int] | None = None
    planned_keys: Callable[[VideoContext], Iterable[str]] | None = None
