"""The clip gallery: a static HTML page over every passed clip, written into the output root.

Opened from disk (file://) or served from a bucket as static files, so no server and no fetch():
browsers refuse fetch() of local files, but not `<script src>`. The data is therefore JavaScript:

- `gallery/page-NNNNN.js`: one page of `PAGE_SIZE` clips each (in video, then start time order), a
  call `clipGallery.page(n, [...])` with each clip's preview, MP4 and metadata links (relative to the
  page, so the tree works wherever it is), captions, scores and duration;
- `gallery/filter.js`: the filter index, one small record per page: the range of videos it holds
  (clips are in video order, so a video is a run of pages), its highest scores, its shortest and
  longest clip, and a Bloom filter of its caption words. A filter loads only the pages that can
  match, then checks each clip of those exactly, showing matches as they arrive (progressive).

Caption filtering matches whole words (letters and digits, case-insensitive), every word of the query
in one clip's captions. The Bloom filters hold about `BLOOM_BITS_PER_WORD` bits per distinct word of
a page, so a page that cannot match is skipped (about 1% of pages are loaded for nothing).

Files are written only when their bytes change, and pages beyond the last are deleted, so a removed
video's clips leave the gallery with the next build.

A clip the index records without an MP4 (NeMo writes the metadata of a clip whose buffer is absent) or
without a preview is still shown, with its captions, scores and metadata link, and says "no MP4" or
"no preview": a curator looking for what went wrong wants to see it, not to miss it. The build counts
and lists them (`GalleryBuild`, the filter index). The gallery reads the index only: a file deleted
from storage behind the index is not looked for here (a request per clip on S3); the training shards'
check and the families' `intact` checks name those.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from clip_assets import layout
from clip_assets.dataset import clip_index
from clip_assets.dataset.gallery_page import GALLERY_CSS, GALLERY_HTML, GALLERY_SCRIPT
from clip_assets.storage import Storage, holds

GALLERY_FORMAT = 1
# Clips per data page (and per screen of the gallery): a page file of ~100 KB at typical captions.
PAGE_SIZE = 120
BLOOM_BITS_PER_WORD = 10
BLOOM_HASHES = 5
_MIN_BLOOM_BITS = 64
_FNV_OFFSET = 0x811C9DC5
_FNV_OFFSET_SECOND = 0x01000193 ^ 0x5BD1E995
_FNV_PRIME = 0x01000193
# Scores are shown and filtered with two decimals; rounding keeps the page files small.
_DECIMALS = 2

COLUMNS = (
    clip_index.CLIP_ID,
    clip_index.PARTITION_KEY,
    clip_index.PASSED,
    clip_index.SPAN_START,
    clip_index.DURATION,
    clip_index.AESTHETIC_SCORE,
    clip_index.MOTION_SCORE,
    clip_index.CAPTIONS,
    clip_index.ENHANCED_CAPTIONS,
    clip_index.PREVIEW_KEYS,
    clip_index.MP4_KEY,
    clip_index.METADATA_KEY,
)


class GalleryError(ValueError):
    """Index rows the gallery cannot show; names the clip and the field."""


# `\w` without `_`: in Python's `re`, `\w` is exactly `str.isalnum()` or `_`.
_WORD = re.compile(r"[^\W_]+")


def caption_words(text: str) -> list[str]:
    """Lowercase runs of letters and digits: what `gallery.js` splits a query into, character for character
    (`str.isalnum` and JavaScript's `[\\p{L}\\p{N}]` are the same Unicode categories)."""
    return _WORD.findall(text.lower())


def _fnv1a(data: bytes, offset: int) -> int:
    value = offset
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def word_hashes(word: str) -> tuple[int, int]:
    """Two FNV-1a hashes of the word's UTF-8 bytes (the second odd), as gallery.js computes them."""
    data = word.encode("utf-8")
    return _fnv1a(data, _FNV_OFFSET), _fnv1a(data, _FNV_OFFSET_SECOND) | 1


def bloom_positions(word: str, bits: int, hashes: tuple[int, int] | None = None) -> list[int]:
    """The filter bits of a word: double hashing, `(first + i * second) % bits` for i < BLOOM_HASHES."""
    first, second = hashes or word_hashes(word)
    return [(first + i * second) % bits for i in range(BLOOM_HASHES)]


def bloom_filter(words: Iterable[str], known: dict[str, tuple[int, int]] | None = None) -> tuple[int, bytes]:
    """A Bloom filter of `words`: its size in bits and its bytes (bit i is bit i % 8 of byte i // 8).
    `known` keeps each word's hashes across the pages of one build (captions share most of their words)."""
    known = {} if known is None else known
    distinct = sorted(set(words))
    bits = max(_MIN_BLOOM_BITS, math.ceil(len(distinct) * BLOOM_BITS_PER_WORD / 8) * 8)
    pairs = [known.get(word) or known.setdefault(word, word_hashes(word)) for word in distinct]
    hashes = np.array(pairs, dtype=np.int64).reshape(len(distinct), 2)
    rounds = np.arange(BLOOM_HASHES, dtype=np.int64)
    positions = (hashes[:, :1] + rounds * hashes[:, 1:]) % bits  # bloom_positions for every word at once
    flags = np.zeros(bits, dtype=np.uint8)
    flags[positions.ravel()] = 1
    return bits, np.packbits(flags, bitorder="little").tobytes()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DECIMALS)


@dataclass(frozen=True)
class GalleryClip:
    """One tile: what a page file holds for a clip, with links relative to the gallery page."""

    clip_id: str
    video: int
    start: float | None
    duration: float | None
    aesthetic: float | None
    motion: float | None
    captions: tuple[tuple[str, str], ...]
    enhanced: tuple[tuple[str, str], ...]
    preview: str | None
    mp4: str | None
    metadata: str

    def words(self) -> Iterator[str]:
        for _, text in (*self.captions, *self.enhanced):
            yield from caption_words(text)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.clip_id,
            "v": self.video,
            "t": self.start,
            "d": self.duration,
            "a": self.aesthetic,
            "m": self.motion,
            "c": [list(caption) for caption in self.captions],
            "e": [list(caption) for caption in self.enhanced],
            "p": self.preview,
            "f": self.mp4,
            "j": self.metadata,
        }


def _link(key: str) -> str:
    return layout.relative_link(layout.gallery_page_key(), key)


def _captions(values: Sequence[dict[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    """Window captions by model, each distinct text once, in window order."""
    seen: dict[tuple[str, str], None] = {}
    for caption in values or ():
        seen.setdefault((str(caption["model"]), str(caption["text"])), None)
    return tuple(seen)


def gallery_clips(rows: pa.Table) -> tuple[list[str], list[GalleryClip]]:
    """The videos (sorted) and the passed clips of `rows` (clip index rows), in video then start order."""
    missing = [name for name in COLUMNS if name not in rows.column_names]
    if missing:
        raise GalleryError(f"clip index: columns {missing} are missing (it has {sorted(rows.column_names)})")
    records = [row for row in rows.select(list(COLUMNS)).to_pylist() if row[clip_index.PASSED]]
    videos = sorted({str(row[clip_index.PARTITION_KEY]) for row in records})
    ordinal = {video: position for position, video in enumerate(videos)}
    records.sort(
        key=lambda row: (
            row[clip_index.PARTITION_KEY],
            row[clip_index.SPAN_START] if row[clip_index.SPAN_START] is not None else -1.0,
            row[clip_index.CLIP_ID],
        )
    )
    clips = []
    for row in records:
        clip_id = row[clip_index.CLIP_ID]
        if row[clip_index.METADATA_KEY] is None:
            raise GalleryError(f"clip index: clip {clip_id}: field {clip_index.METADATA_KEY!r} is empty")
        previews = row[clip_index.PREVIEW_KEYS] or []
        clips.append(
            GalleryClip(
                clip_id=clip_id,
                video=ordinal[str(row[clip_index.PARTITION_KEY])],
                start=_rounded(row[clip_index.SPAN_START]),
                duration=_rounded(row[clip_index.DURATION]),
                aesthetic=_rounded(row[clip_index.AESTHETIC_SCORE]),
                motion=_rounded(row[clip_index.MOTION_SCORE]),
                captions=_captions(row[clip_index.CAPTIONS]),
                enhanced=_captions(row[clip_index.ENHANCED_CAPTIONS]),
                preview=_link(previews[0]) if previews else None,
                mp4=_link(row[clip_index.MP4_KEY]) if row[clip_index.MP4_KEY] is not None else None,
                metadata=_link(row[clip_index.METADATA_KEY]),
            )
        )
    return videos, clips


def _highest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _lowest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def page_summary(clips: Sequence[GalleryClip], known: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """A page's record in the filter index: what a filter needs to know whether to load the page."""
    bits, bloom = bloom_filter((word for clip in clips for word in clip.words()), known)
    return {
        "videos": [min(c.video for c in clips), max(c.video for c in clips)],
        "maxAesthetic": _highest(c.aesthetic for c in clips),
        "maxMotion": _highest(c.motion for c in clips),
        "minDuration": _lowest(c.duration for c in clips),
        "maxDuration": _highest(c.duration for c in clips),
        "bloomBits": bits,
        "bloom": base64.b64encode(bloom).decode("ascii"),
    }


def _script(call: str, *arguments: Any) -> bytes:
    """`clipGallery.<call>(...)` with JSON arguments: JSON is valid JavaScript (ES2019 and later)."""
    body = ",".join(json.dumps(a, ensure_ascii=False, separators=(",", ":"), allow_nan=False) for a in arguments)
    return f"clipGallery.{call}({body});\n".encode()


def page_file_name(page: int) -> str:
    return f"page-{page:05d}.js"


@dataclass
class GalleryBuild:
    """What one build wrote: the clips and pages shown (those shown without an MP4 or a preview by id),
    and which files changed or went."""

    clips: int = 0
    videos: int = 0
    pages: int = 0
    without_mp4: list[str] = field(default_factory=list)
    without_preview: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_total: int = 0


@dataclass(frozen=True)
class GalleryContent:
    """Every file of the gallery by its key, the numbers of clips and videos it shows, and the clips shown
    without an MP4 or a preview."""

    files: dict[str, bytes]
    clips: int
    videos: int
    without_mp4: list[str]
    without_preview: list[str]


def gallery_files(rows: pa.Table, page_size: int = PAGE_SIZE) -> GalleryContent:
    """Every file of the gallery of `rows` (clip index rows), and what it shows."""
    videos, clips = gallery_clips(rows)
    without_mp4 = sorted(clip.clip_id for clip in clips if clip.mp4 is None)
    without_preview = sorted(clip.clip_id for clip in clips if clip.preview is None)
    pages = [clips[start : start + page_size] for start in range(0, len(clips), page_size)]
    files = {
        layout.gallery_page_key(): GALLERY_HTML.encode(),
        layout.gallery_file_key("gallery.js"): GALLERY_SCRIPT.encode(),
        layout.gallery_file_key("gallery.css"): GALLERY_CSS.encode(),
    }
    for number, page in enumerate(pages):
        files[layout.gallery_file_key(page_file_name(number))] = _script(
            "page", number, [clip.to_json() for clip in page]
        )
    known: dict[str, tuple[int, int]] = {}
    index = {
        "format": GALLERY_FORMAT,
        "clips": len(clips),
        "pageSize": page_size,
        "videos": videos,
        "clipsWithoutMp4": len(without_mp4),
        "clipsWithoutPreview": len(without_preview),
        "bloomHashes": BLOOM_HASHES,
        "pages": [page_summary(page, known) for page in pages],
    }
    files[layout.gallery_file_key("filter.js")] = _script("index", index)
    return GalleryContent(files, len(clips), len(videos), without_mp4, without_preview)


def write_gallery(
    storage: Storage, rows: pa.Table, page_size: int = PAGE_SIZE, lock_timeout_s: float = 600.0
) -> GalleryBuild:
    """Write the gallery of `rows` (clip index rows) under `gallery/`; unchanged files are not rewritten, and
    a gallery that is already what `rows` make takes no lock and writes nothing."""
    content = gallery_files(rows, page_size)
    build = GalleryBuild(
        clips=content.clips,
        videos=content.videos,
        pages=-(-content.clips // page_size),
        without_mp4=content.without_mp4,
        without_preview=content.without_preview,
        bytes_total=sum(len(data) for data in content.files.values()),
    )
    changed, stale = _changes(storage, content.files)
    if changed or stale:
        with storage.lock(layout.gallery_lock_key(), lock_timeout_s):
            changed, stale = _changes(storage, content.files)
            for key in changed:
                data = content.files[key]
                storage.put(key, data, sha256=hashlib.sha256(data).hexdigest())
            for key in stale:
                storage.delete(key)
    build.written, build.removed = changed, stale
    build.unchanged = len(content.files) - len(changed)
    return build


def _changes(storage: Storage, files: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """The files to write (the page files first and the index last, so an open gallery never names a page
    not yet written) and the pages no longer made."""
    keys = sorted(files)
    keys.sort(key=lambda key: key == layout.gallery_file_key("filter.js"))
    changed = [
        key
        for key, info in zip(keys, storage.stat_many(keys), strict=True)
        if not holds(storage, key, files[key], info)
    ]
    stale = sorted(
        info.key
        for info in storage.list(layout.GALLERY)
        if info.key not in files and info.key.rsplit("/", 1)[-1].startswith("page-")
    )
    return changed, stale


def read_gallery_index(storage: Storage) -> dict[str, Any] | None:
    """The filter index as the last build wrote it (`clipGallery.index({...});`); None before the first."""
    key = layout.gallery_file_key("filter.js")
    if storage.stat(key) is None:
        return None
    text = storage.read(key).decode("utf-8")
    prefix, suffix = "clipGallery.index(", ");\n"
    if not (text.startswith(prefix) and text.endswith(suffix)):
        raise GalleryError(f"{layout.full_location(storage.root, key)}: not a gallery filter index")
    document = json.loads(text[len(prefix) : -len(suffix)])
    if not isinstance(document, dict) or document.get("format") != GALLERY_FORMAT:
        raise GalleryError(f"{layout.full_location(storage.root, key)}: field 'format' is not {GALLERY_FORMAT}")
    return document


def verify_gallery(storage: Storage, rows: pa.Table) -> list[str]:
    """What is wrong with the gallery against the clip index `rows` (`COLUMNS` of them): the clips it
    counts, and every file it should have, compared byte for byte with what the index makes (by the
    sha256 the object carries on S3, by reading it locally), and pages past the last."""
    index = read_gallery_index(storage)
    if index is None:
        return [f"{layout.full_location(storage.root, layout.gallery_page_key())} was never written"]
    expected = gallery_files(rows, int(index.get("pageSize") or PAGE_SIZE))
    problems = []
    if index.get("clips") != expected.clips:
        problems.append(f"the gallery shows {index.get('clips')} clips, the index has {expected.clips} passed clips")
    keys = sorted(expected.files)
    for key, info in zip(keys, storage.stat_many(keys), strict=True):
        where = layout.full_location(storage.root, key)
        if info is None:
            problems.append(f"{where} is missing")
        elif not holds(storage, key, expected.files[key], info):
            problems.append(
                f"{where} is not what the clip index makes (changed since it was written, or the index changed: "
                "materialize clip_gallery)"
            )
    pages = sorted(info.key for info in storage.list(layout.GALLERY) if info.key.rsplit("/", 1)[-1].startswith("page-"))
    problems += [
        f"{layout.full_location(storage.root, key)} is a page past the last"
        for key in pages
        if key not in expected.files
    ]
    return problems
