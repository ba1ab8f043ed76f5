"""Training shards and the gallery: what one added video costs against building them from scratch.

Clip index rows are made here (20 clips a video, 64-d embeddings, captions from a 2,000-word
vocabulary) and each clip's "MP4" is 16 KB of random bytes on local disk: the shard writer copies and
hashes the file, it never decodes it, so real video would only make every figure larger alike.

- shards, floor: every shard written from an empty `training_shards/` (2 MiB shards);
- shards, one added video: `update_shards` after a new video's 20 clips arrive (only the shard whose
  hash range it falls in is rebuilt; the others are kept without reading a byte);
- gallery, floor: the whole gallery written into an empty folder;
- gallery, one added video: the gallery rebuilt with the video's clips (every file is made again in
  memory, only those whose bytes changed are written).

"Incremental" is held as: an added video costs under a tenth of a rebuild for the shards. The
gallery has no target: its rebuild makes every file again in memory (its pages follow video order, so
a video in the middle moves every later page) and compares each with what is stored, which costs
about what the first build's writes did; the details say how many files it rewrote.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import uuid

import numpy as np
import pyarrow as pa

from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress
from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.gallery import write_gallery
from clip_assets.dataset.shards import update_shards
from clip_assets.storage import LocalStorage

CLIPS_PER_VIDEO = 20
DIM = 64
MP4_BYTES = 16 * 1024
SHARD_BYTES = 2 * 2**20
INCREMENTAL = Target("<=", 0.1, "< 10% of a full rebuild")


def _video(storage: LocalStorage, number: int, rng: random.Random, vocabulary: list[str]) -> list[dict[str, object]]:
    """One video's index rows, its clip files written to `storage`."""
    rows = []
    for clip in range(CLIPS_PER_VIDEO):
        clip_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data = rng.randbytes(MP4_BYTES)
        mp4_key = layout.clip_key(clip_id, filtered=False)
        storage.put(mp4_key, data)
        text = " ".join(rng.choice(vocabulary) for _ in range(12))
        rows.append(
            {
                ci.CLIP_ID: clip_id,
                ci.PARTITION_KEY: f"video-{number:06d}.mp4",
                ci.PASSED: True,
                ci.SPAN_START: clip * 2.0,
                ci.DURATION: 2.0,
                ci.AESTHETIC_SCORE: round(rng.uniform(3, 6), 2),
                ci.MOTION_SCORE: round(rng.uniform(0, 5), 2),
                ci.CAPTION: text,
                ci.CAPTIONS: [{"start_frame": 0, "end_frame": 48, "model": "qwen", "text": text}],
                ci.ENHANCED_CAPTIONS: [],
                ci.PREVIEW_KEYS: [layout.preview_key(clip_id, 0, 48)],
                ci.MP4_KEY: mp4_key,
                ci.MP4_BYTES: MP4_BYTES,
                ci.MP4_SHA256: hashlib.sha256(data).hexdigest(),
                ci.METADATA_KEY: layout.clip_metadata_key(clip_id),
                ci.EMBEDDING: [rng.gauss(0, 1) for _ in range(DIM)],
                ci.EMBEDDING_MODEL: "random-gaussian",
                ci.EMBEDDING_VERSION: "",
            }
        )
    return rows


def _table(rows: list[dict[str, object]]) -> pa.Table:
    table = pa.Table.from_pylist([{k: v for k, v in row.items() if k != ci.EMBEDDING} for row in rows])
    flat = np.asarray([row[ci.EMBEDDING] for row in rows], dtype=np.float32).reshape(-1)
    return table.append_column(ci.EMBEDDING, pa.FixedSizeListArray.from_arrays(pa.array(flat), DIM))


def run(ctx: Context, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    for clips in sizes:
        root = ctx.scratch / f"exports-{clips}"
        storage = LocalStorage(root)
        rng = random.Random(clips)
        vocabulary = [f"word{n}" for n in range(2000)]
        videos = clips // CLIPS_PER_VIDEO
        progress(f"exports, {clips} clips: writing {clips} clip files")
        index = [row for number in range(videos) for row in _video(storage, number, rng, vocabulary)]
        base = _table(index)
        shards_floor: list[float] = []
        shards_added: list[float] = []
        gallery_floor: list[float] = []
        gallery_added: list[float] = []
        details: dict[str, object] = {}
        for repetition in range(ctx.repeat):
            progress(f"exports, {clips} clips: repetition {repetition + 1}/{ctx.repeat}")
            shutil.rmtree(root / layout.TRAINING_SHARDS, ignore_errors=True)
            shutil.rmtree(root / layout.GALLERY, ignore_errors=True)
            with Timer() as timer:
                built = update_shards(storage, base, shard_bytes=SHARD_BYTES)
            shards_floor.append(timer.seconds)
            with Timer() as timer:
                first = write_gallery(storage, base)
            gallery_floor.append(timer.seconds)
            added = _table(index + _video(storage, videos + repetition, rng, vocabulary))
            with Timer() as timer:
                update = update_shards(storage, added, shard_bytes=SHARD_BYTES)
            shards_added.append(timer.seconds)
            with Timer() as timer:
                again = write_gallery(storage, added)
            gallery_added.append(timer.seconds)
            details = {
                "shards": len(built.index.shards),
                "shards_rebuilt_for_the_added_video": len(update.written),
                "shards_kept": len(update.kept),
                "gallery_pages": first.pages,
                "gallery_files_rewritten_for_the_added_video": len(again.written),
            }
        workload = f"{clips} clips ({videos} videos)"
        rows += [
            Row("exports", workload, "floor: every training shard written", "s", shards_floor, "itself",
                shards_floor, [1.0] * len(shards_floor), details=details),
            Row("exports", workload, "one added video: training shards update", "s", shards_added, "full build",
                shards_floor, paired_ratios(shards_added, shards_floor), ratio_label="x build",
                target=INCREMENTAL, details=details),
            Row("exports", workload, "floor: the gallery written", "s", gallery_floor, "itself", gallery_floor,
                [1.0] * len(gallery_floor), details=details),
            Row("exports", workload, "one added video: gallery rebuild", "s", gallery_added, "first build",
                gallery_floor, paired_ratios(gallery_added, gallery_floor), ratio_label="x build",
                details=details),
        ]  # fmt: skip
        shutil.rmtree(root)
    return rows
