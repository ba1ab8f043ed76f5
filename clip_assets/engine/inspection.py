"""The whole-file check every partition passes before anything of it is written, and what it learns.

The reader enforces the contract clip by clip (types, spans, ids, embeddings, sizes); inspection adds
what only decoding can tell: every MP4 demuxes to a usable video (its probe is kept for the metadata
JSON, so clips are probed once, here), every WebP parses as an image, and no family refuses a clip
(`OutputFamily.check_clip`: metadata that would overwrite the writer's own keys). What it learns per clip
(`ClipFacts`: sizes, probe, which windows have a WebP, which embeddings exist) lets the families that
only need those facts skip the heavy byte columns when they stream the file again.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from clip_assets.contract import ClipRecord, ProcessedVideoError, ProcessedVideoReader, schema
from clip_assets.contract.reader import ALL_COLUMNS
from clip_assets.contract.validation import VideoChecks
from clip_assets.families import FAMILIES, OutputFamily
from clip_assets.families.base import ClipFacts
from clip_assets.media.probe import ClipProbe, MediaError, probe_mp4


@dataclass(frozen=True)
class VideoInspection:
    """A file that passed inspection: counts for the log, facts per clip id for the builders."""

    num_clips: int
    num_passed: int
    num_filtered: int
    facts: Mapping[str, ClipFacts]


def _check_webp(file: str, clip: ClipRecord, position: int, data: bytes | memoryview) -> None:
    """Parse the WebP's header chunks (no pixel decoding): refuses bytes that merely start like one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
                width, height = image.size
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise ProcessedVideoError(
            file, f"{schema.WINDOWS}[{position}].webp", f"not a readable WebP ({exc})", row=clip.row, clip_id=clip.uuid
        ) from None
    if width <= 0 or height <= 0:
        raise ProcessedVideoError(
            file, f"{schema.WINDOWS}[{position}].webp", f"empty image {width}x{height}", row=clip.row, clip_id=clip.uuid
        )


def _most_frames(clip: ClipRecord, probe: ClipProbe | None, framerate: float | None) -> int | None:
    """How far a window may reach: the MP4's frames, else the span at the video's rate, else unknown."""
    if probe is not None:
        return probe.num_frames
    if framerate:
        return math.ceil((clip.span_end - clip.span_start) * framerate) + 1
    return None


def clip_facts(file: str, clip: ClipRecord, framerate: float | None = None) -> ClipFacts:
    """Facts of a clip read with every column; probes its MP4 and parses its WebPs, or fails naming them.

    Windows are checked against the clip's length, since their frame numbers become file names.
    """
    probe = None
    if clip.mp4 is not None:
        try:
            probe = probe_mp4(clip.mp4)
        except MediaError as exc:
            problem = f"cannot be probed: {exc}"
            raise ProcessedVideoError(file, schema.MP4, problem, row=clip.row, clip_id=clip.uuid) from None
    most_frames = _most_frames(clip, probe, framerate)
    webp_windows = []
    for position, window in enumerate(clip.windows):
        if most_frames is not None and window.end_frame > most_frames:
            raise ProcessedVideoError(
                file,
                f"{schema.WINDOWS}[{position}].end_frame",
                f"{window.end_frame} is beyond the clip's {most_frames} frames",
                row=clip.row,
                clip_id=clip.uuid,
            )
        if window.webp is not None:
            _check_webp(file, clip, position, window.webp)
            webp_windows.append((window.start_frame, window.end_frame))
    return ClipFacts(
        row=clip.row,
        mp4_bytes=len(clip.mp4) if clip.mp4 is not None else None,
        probe=probe,
        webp_windows=frozenset(webp_windows),
        embedding_algorithms=frozenset(clip.embeddings),
        chunk_index=clip.chunk_index,
        filtered=clip.filtered,
    )


def inspect_clips(
    file: str,
    clips: Iterable[ClipRecord],
    framerate: float | None = None,
    families: Sequence[OutputFamily] = FAMILIES,
) -> VideoInspection:
    """Consume every clip (read with every column); raises on the first problem, naming file, row and field.

    Each of `families` may refuse a clip it could not write (`OutputFamily.check_clip`); all of a
    dataset's families are asked, whichever are being written, so a file is good or bad for all of them.
    """
    checks = [family.check_clip for family in families if family.check_clip is not None]
    facts: dict[str, ClipFacts] = {}
    passed = filtered = 0
    for clip in clips:
        facts[clip.uuid] = clip_facts(file, clip, framerate)
        for check in checks:
            check(file, clip)
        if clip.filtered:
            filtered += 1
        else:
            passed += 1
    return VideoInspection(passed + filtered, passed, filtered, facts)


def inspect_video(
    reader: ProcessedVideoReader, families: Sequence[OutputFamily] = FAMILIES, checks: VideoChecks | None = None
) -> VideoInspection:
    """One streaming pass over every column of the file: the full check before anything is written.

    `checks` is shared by the chunk files of one video (clip ids unique across them, and so on)."""
    return inspect_clips(reader.name, reader.iter_clips(ALL_COLUMNS, checks), reader.info.framerate, families)


def merge_inspections(inspections: Sequence[VideoInspection]) -> VideoInspection:
    """The chunk files' inspections as the video's (their clip ids are distinct: `VideoChecks` saw to it)."""
    if len(inspections) == 1:
        return inspections[0]
    facts: dict[str, ClipFacts] = {}
    for inspection in inspections:
        facts.update(inspection.facts)
    return VideoInspection(
        sum(i.num_clips for i in inspections),
        sum(i.num_passed for i in inspections),
        sum(i.num_filtered for i in inspections),
        facts,
    )
