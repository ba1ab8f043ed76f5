"""What the asset checks verify, family by family, against the objects as they are now. Free of Dagster.

Every family: each manifest entry exists with the recorded size and sha256. Then what the bytes
must be: clip MP4s demux to a usable video, previews decode frame by frame, embeddings load (through
an unpickler that only admits numpy arrays, since a tampered pickle could run code) and their
Parquet files have NeMo's schema and one row per clip pickle, metadata JSON names its own clip and an
existing `clip_location`, and each chunk summary's counters agree with the other families' files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clip_assets import layout
from clip_assets.manifest import PartitionManifest
from clip_assets.media.probe import MediaError, probe_mp4
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage, StorageError
from clip_assets.thread_pools import shared_pool

# Objects verified at once: each is read whole (they are clip-sized), so this bounds memory too.
VERIFY_WORKERS = 4


@dataclass(frozen=True)
class Problem:
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


@dataclass
class Verification:
    """The outcome for one partition of one family."""

    checked: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class Damaged(ValueError):
    """Bytes that are present and match their hash but are not what the family promises."""


Inspector = Callable[[str, bytes], None]


def _probe(key: str, data: bytes) -> None:
    try:
        probe_mp4(data)
    except MediaError as exc:
        raise Damaged(f"not a usable MP4 ({exc})") from None


def _decode_webp(key: str, data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise Damaged(f"does not decode as WebP ({exc})") from None


class _ArrayUnpickler(pickle.Unpickler):
    """Loads pickled numpy arrays and nothing else: a tampered pickle cannot import or call anything."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_embedding(data: bytes) -> np.ndarray:
    """A clip's embedding pickle, as NeMo writes it (`pickle.dumps(ndarray)`), loaded safely."""
    array = _ArrayUnpickler(io.BytesIO(data)).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"holds a {type(array).__name__}, not an array")
    return array


def _embedding(key: str, data: bytes) -> None:
    if key.endswith(".pickle"):
        try:
            array = load_embedding(data)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise Damaged(f"not a pickled numpy array ({exc})") from None
        if array.size == 0 or not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise Damaged(f"not a finite float embedding ({array.dtype}, {array.size} values)")
        return
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise Damaged(f"not a readable Parquet file ({exc})") from None
    if table.column_names != ["id", "embedding"]:
        raise Damaged(f"columns {table.column_names}, expected ['id', 'embedding']")
    embedding = table.schema.field("embedding").type
    if not pa.types.is_string(table.schema.field("id").type) or not (
        pa.types.is_list(embedding) and pa.types.is_floating(embedding.value_type)
    ):
        raise Damaged(f"schema {table.schema}, expected id: string, embedding: list<float>")


def _json(key: str, data: bytes) -> None:
    try:
        json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(f"not JSON ({exc})") from None


INSPECTORS: dict[str, Inspector] = {
    "clip_files": _probe,
    "clip_previews": _decode_webp,
    "clip_embeddings": _embedding,
    "clip_metadata": _json,
    "video_summaries": _json,
}


def _read_and_inspect(storage: Storage, key: str, size: int, sha256: str, inspect: Inspector) -> tuple[int, str | None]:
    try:
        data = storage.read(key)
    except StorageError as exc:
        return 0, "missing" if exc.errno == errno.ENOENT else str(exc)
    if len(data) != size:
        return len(data), f"{len(data)} bytes, the manifest recorded {size}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return len(data), "content differs from the recorded sha256"
    try:
        inspect(key, data)
    except Damaged as exc:
        return len(data), str(exc)
    return len(data), None


def verify_entries(storage: Storage, manifest: PartitionManifest) -> Verification:
    """Read every recorded object back: present, same size, same sha256, and decodable as its family's."""
    inspect = INSPECTORS[manifest.family]
    result = Verification()
    entries = sorted(manifest.entries.items())
    outcomes = shared_pool(VERIFY_WORKERS).map(
        lambda item: _read_and_inspect(storage, item[0], item[1].size, item[1].sha256, inspect), entries
    )
    for (key, _), (read, problem) in zip(entries, outcomes, strict=True):
        result.checked += 1
        result.bytes_read += read
        if problem is not None:
            result.problems.append(Problem(key, problem))
    return result


def _documents(storage: Storage, manifest: PartitionManifest, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in sorted(manifest.entries):
        if key.startswith(prefix):
            try:
                yield key, json.loads(storage.read(key))
            except (StorageError, ValueError):
                continue  # already reported by verify_entries


def verify_cross_references(
    storage: Storage,
    manifest: PartitionManifest,
    others: Mapping[str, PartitionManifest | None],
    settings: WriterSettings,
) -> list[Problem]:
    """What one family says about the others: metadata's `clip_location`, embeddings per clip, counters."""
    problems: list[Problem] = []
    clip_files = others.get("clip_files")
    if manifest.family == "clip_metadata":
        for key, doc in _documents(storage, manifest, "metas/"):
            if layout.clip_metadata_key(str(doc.get("span_uuid"))) != key:
                problems.append(Problem(key, f"span_uuid {doc.get('span_uuid')!r} does not match the file name"))
            location = str(doc.get("clip_location", ""))
            clip_key = location.removeprefix(storage.root.rstrip("/") + "/")
            if clip_files is not None and clip_key in clip_files.entries and storage.stat(clip_key) is None:
                problems.append(Problem(key, f"clip_location {location} does not exist"))
    elif manifest.family == "clip_embeddings":
        pickles = {key for key in manifest.entries if key.endswith(".pickle")}
        listed: set[str] = set()
        for key in sorted(manifest.entries):
            if not key.endswith(".parquet"):
                continue
            try:
                ids = pq.read_table(io.BytesIO(storage.read(key)), columns=["id"]).column("id").to_pylist()
            except (StorageError, pa.ArrowException, OSError, KeyError):
                continue  # already reported by verify_entries
            for clip_id in ids:
                pickle_key = layout.embedding_pickle_key(settings.embedding_algorithm, clip_id)
                if pickle_key not in pickles:
                    problems.append(Problem(key, f"row {clip_id} has no clip pickle {pickle_key}"))
                listed.add(pickle_key)
        problems += [Problem(key, "in no chunk's Parquet file") for key in sorted(pickles - listed)]
    elif manifest.family == "video_summaries":
        problems += _verify_counters(storage, manifest, others, settings)
    return problems


def _verify_counters(
    storage: Storage,
    manifest: PartitionManifest,
    others: Mapping[str, PartitionManifest | None],
    settings: WriterSettings,
) -> list[Problem]:
    problems = []
    previews, embeddings, clip_files = (others.get(f) for f in ("clip_previews", "clip_embeddings", "clip_files"))
    for key, doc in _documents(storage, manifest, "processed_clip_chunks/"):
        clips, filtered = list(doc.get("clips", [])), list(doc.get("filtered_clips", []))
        checks: list[tuple[str, int, int]] = [("num_clips_passed", int(doc.get("num_clips_passed", -1)), len(clips))]
        if not settings.dry_run:
            if previews is not None:
                folders = {key.rsplit("/", 1)[0] + "/" for key in previews.entries}
                with_webp = sum(layout.preview_prefix(u) in folders for u in clips)
                checks.append(("num_clips_with_webp", int(doc.get("num_clips_with_webp", -1)), with_webp))
            if embeddings is not None:
                pickled = sum(
                    layout.embedding_pickle_key(settings.embedding_algorithm, u) in embeddings.entries for u in clips
                )
                checks.append(("num_clips_with_embeddings", int(doc.get("num_clips_with_embeddings", -1)), pickled))
            if clip_files is not None and settings.upload_clips:
                stored = sum(layout.clip_key(u, filtered=False) in clip_files.entries for u in clips) + sum(
                    layout.clip_key(u, filtered=True) in clip_files.entries for u in filtered
                )
                checks.append(("num_clips_transcoded", int(doc.get("num_clips_transcoded", -1)), stored))
        for name, recorded, found in checks:
            if recorded != found:
                problems.append(Problem(key, f"{name} is {recorded}, the files say {found}"))
    return problems
