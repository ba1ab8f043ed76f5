"""Training shards at scale: time and peak RSS of building every shard from a clip index of N rows.

The index is a real Lance clip index (`clip_assets.dataset.clip_index`'s schema) written here in
batches: 20 clips a video, 768-d float32 vectors clustered like real embeddings (a video's clips share
a random centre plus their own noise), 12-word captions from a 2,000-word vocabulary. Its clips' MP4s
are small synthetic files: `MP4_FILES` distinct files of `MP4_BYTES` random bytes, each clip's row
naming one of them (its key, size and sha256), so a million clips do not need a million files; the
shard writer reads, hashes and copies each clip's file once per clip all the same, and never decodes
it, so real video would make the tars (and the time) larger, not the memory.

The build runs `update_shards` over the Lance dataset (what the `training_shards` asset does) in a
fresh process that reports its own peak RSS (VmHWM, as `bench_scale` measures it); the floor is a
process that imports the same modules and opens the index. At 10^6 clips the vectors alone are 3 GB,
so the build's peak shows whether memory is bounded by the setting (`batch_rows`) or by the dataset.

    python -m benchmarks.shards_scale --clips 1000000     # one measurement, printed as JSON
    python -m benchmarks --only dataset                    # with the dataset tables, at their sizes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.harness import REPO_ROOT, Context, Row, Target, peak_rss_mb, progress
from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.shards import DEFAULT_BATCH_ROWS, DEFAULT_SHARD_BYTES

CLIPS_PER_VIDEO = 20
DIM = 768
MP4_FILES = 1000
MP4_BYTES = 1024
WORDS = 2000
# A clip's own noise against its video's centre (per value).
CLIP_SPREAD = 0.5
RSS_TARGET = Target("<=", 1500.0, "< 1.5 GB", on_value=True)
WRITE_BATCH_ROWS = 10_000


def _mp4_files(root: Path, rng: np.random.Generator) -> list[tuple[str, str]]:
    """The synthetic clip files: (key, sha256) of each."""
    files = []
    for number in range(MP4_FILES):
        key = f"{layout.CLIPS}synthetic-{number:05d}.mp4"
        data = rng.bytes(MP4_BYTES)
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        files.append((key, hashlib.sha256(data).hexdigest()))
    return files


def _batches(root: Path, clips: int, seed: int) -> Iterator[pa.RecordBatch]:
    """The index rows, `WRITE_BATCH_ROWS` at a time (never every vector in memory)."""
    rng = np.random.default_rng(seed)
    files = _mp4_files(root, rng)
    vocabulary = np.array([f"word{n}" for n in range(WORDS)])
    schema = ci.clip_index_schema()
    for start in range(0, clips, WRITE_BATCH_ROWS):
        count = min(WRITE_BATCH_ROWS, clips - start)
        numbers = np.arange(start, start + count)
        videos = numbers // CLIPS_PER_VIDEO
        centres = {int(v): np.random.default_rng(int(v)).normal(size=DIM) for v in np.unique(videos)}
        vectors = np.stack([centres[int(v)] for v in videos]) + rng.normal(scale=CLIP_SPREAD, size=(count, DIM))
        texts = [" ".join(words) for words in rng.choice(vocabulary, size=(count, 12))]
        chosen = [files[int(n) % MP4_FILES] for n in numbers]
        ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in numbers]
        columns: dict[str, Any] = {
            ci.CLIP_ID: ids,
            ci.PARTITION_KEY: [f"cam{v % 40}/video-{v:06d}.mp4" for v in videos],
            ci.SOURCE_VIDEO: [f"/videos/cam{v % 40}/video-{v:06d}.mp4" for v in videos],
            ci.CHUNK_INDEX: [0] * count,
            ci.SPAN_START: (numbers % CLIPS_PER_VIDEO * 2.0).tolist(),
            ci.SPAN_END: (numbers % CLIPS_PER_VIDEO * 2.0 + 2.0).tolist(),
            ci.DURATION: [2.0] * count,
            ci.PASSED: [True] * count,
            ci.VALID: [True] * count,
            ci.ERRORS: [[] for _ in range(count)],
            ci.AESTHETIC_SCORE: rng.uniform(3, 6, size=count).round(2).tolist(),
            ci.CAPTION: texts,
            ci.CAPTIONS: [[{"start_frame": 0, "end_frame": 48, "model": "qwen", "text": t}] for t in texts],
            ci.ENHANCED_CAPTIONS: [[] for _ in range(count)],
            ci.WIDTH: [1280] * count,
            ci.HEIGHT: [720] * count,
            ci.FRAMERATE: [24.0] * count,
            ci.NUM_FRAMES: [48] * count,
            ci.VIDEO_CODEC: ["h264"] * count,
            ci.MP4_KEY: [key for key, _ in chosen],
            ci.MP4_BYTES: [MP4_BYTES] * count,
            ci.MP4_SHA256: [sha for _, sha in chosen],
            ci.PREVIEW_KEYS: [[layout.preview_key(i, 0, 48)] for i in ids],
            ci.METADATA_KEY: [layout.clip_metadata_key(i) for i in ids],
            ci.EMBEDDING_KEY: [layout.embedding_pickle_key("cosmos-embed1", i) for i in ids],
            ci.EMBEDDING: pa.ListArray.from_arrays(
                pa.array(np.arange(count + 1, dtype=np.int32) * DIM),
                pa.array(vectors.astype(np.float32).reshape(-1)),
            ),
            ci.EMBEDDING_MODEL: ["cosmos-embed1"] * count,
            ci.EMBEDDING_VERSION: ["448p"] * count,
        }
        arrays = [
            pa.nulls(count, f.type)
            if f.name not in columns
            else columns[f.name]
            if isinstance(columns[f.name], pa.Array)
            else pa.array(columns[f.name], f.type)
            for f in schema
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def make_index(root: Path, clips: int, seed: int = 1) -> Path:
    """A Lance clip index of `clips` rows under `root` (and their synthetic MP4s); returns the root."""
    import lance

    reader = pa.RecordBatchReader.from_batches(ci.clip_index_schema(), _batches(root, clips, seed))
    lance.write_dataset(reader, str(root / layout.clip_index_key()), max_rows_per_file=1 << 20)
    return root


def child(mode: str, root: str, shard_bytes: int, batch_rows: int) -> dict[str, Any]:
    """Runs in the fresh process: import and open the index (`floor`), or build every shard from it."""
    started = time.perf_counter()
    from clip_assets.dataset.shards import update_shards
    from clip_assets.dataset.tables import table_location
    from clip_assets.storage import LocalStorage

    storage = LocalStorage(Path(root))
    index = table_location(storage, layout.clip_index_key()).latest()
    opened = time.perf_counter() - started
    if mode == "floor":
        return {"rss_mb": peak_rss_mb(), "seconds": opened}
    started = time.perf_counter()
    update = update_shards(storage, index, shard_bytes=shard_bytes, batch_rows=batch_rows)
    return {
        "rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "shards": len(update.index.shards),
        "samples": update.index.samples,
        "bytes": update.index.total_bytes,
    }


def measure(
    root: Path, mode: str, shard_bytes: int = DEFAULT_SHARD_BYTES, batch_rows: int = DEFAULT_BATCH_ROWS
) -> dict[str, Any]:
    """`child` in a fresh process (its own peak RSS, nothing of this one's); its figures."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.shards_scale",
        "--child",
        mode,
        str(root),
        str(shard_bytes),
        str(batch_rows),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{mode} process failed (exit {done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-8:])
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_shards_build(
    scratch: Path,
    clips: int,
    repeat: int = 1,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> dict[str, Any]:
    """Every shard built from an index of `clips` rows, `repeat` times from an empty `training_shards/`:
    seconds and peak RSS of each build, and of the floor (a process that only opens the index)."""
    root = scratch / f"shards-{clips}"
    progress(f"shards, {clips} clips: writing the clip index ({clips * DIM * 4 / 2**30:.1f} GiB of vectors)")
    make_index(root, clips)
    figures: dict[str, Any] = {"clips": clips, "floor": measure(root, "floor"), "builds": []}
    for repetition in range(repeat):
        progress(f"shards, {clips} clips: build {repetition + 1}/{repeat}")
        shutil.rmtree(root / layout.TRAINING_SHARDS, ignore_errors=True)
        figures["builds"].append(measure(root, "build", shard_bytes, batch_rows))
    shutil.rmtree(root)
    return figures


def run(ctx: Context, clips: int) -> list[Row]:
    """The suite's rows: a build's time, and its peak RSS against the floor, with the 1.5 GB target."""
    figures = measure_shards_build(ctx.scratch, clips, ctx.repeat)
    builds, floor = figures["builds"], figures["floor"]
    seconds = [build["seconds"] for build in builds]
    rss = [build["rss_mb"] for build in builds]
    workload = f"{clips} clips, {DIM}-d"
    details = {key: builds[-1][key] for key in ("shards", "samples", "bytes")}
    return [
        Row("dataset", workload, "training shards: every shard built", "s", seconds, "itself", seconds,
            [1.0] * len(seconds), details=details),
        Row("dataset", workload, "training shards build: peak RSS", "MB", rss, "process opening the index",
            [floor["rss_mb"]] * len(rss), [r / floor["rss_mb"] for r in rss], target=RSS_TARGET, details=details),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shards_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--shard-bytes", type=int, default=DEFAULT_SHARD_BYTES)
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    parser.add_argument("--tmp", type=Path, help="parent of the scratch folder (default: the system temp dir)")
    parser.add_argument(
        "--child", nargs=4, metavar=("MODE", "ROOT", "SHARD_BYTES", "BATCH_ROWS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        mode, root, shard_bytes, batch_rows = args.child
        print(json.dumps(child(mode, root, int(shard_bytes), int(batch_rows))))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="clip-assets-shards-", dir=args.tmp))
    try:
        figures = measure_shards_build(scratch, args.clips, args.repeat, args.shard_bytes, args.batch_rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
