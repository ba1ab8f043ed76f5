"""Local write benchmark: a partition's whole output through Dagster against plain `open().write()`.

    python benchmarks/local_write.py [--videos 20 --clips 40 --clip-kb 1024 --repeat 3]

Prints medians (and min-max) of: the floor (writing the same bytes to the same paths with plain
writes), the first materialization of every partition, and a re-run of unchanged partitions, each as a
ratio against the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from dagster import instance_for_test, materialize

from clip_assets.assets.clip_embeddings import clip_embeddings
from clip_assets.assets.clip_files import clip_files
from clip_assets.assets.clip_metadata import clip_metadata
from clip_assets.assets.clip_previews import clip_previews
from clip_assets.assets.inbox import processed_videos
from clip_assets.assets.partitions import processed_video_partitions
from clip_assets.assets.video_summaries import video_summaries
from clip_assets.contract import ClipRecord, VideoInfo, Window, write_processed_video
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.definitions import build_resources
from clip_assets.resources import WriterSettingsResource

FAMILIES = [processed_videos, clip_files, clip_previews, clip_embeddings, clip_metadata, video_summaries]
FPS = 24


def noise_mp4(target_bytes: int, seed: int) -> bytes:
    """A real H.264 clip of roughly `target_bytes` (noise does not compress)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        frame_bytes = 320 * 240  # lossless noise costs about a byte per luma pixel
        for _ in range(max(2, target_bytes // frame_bytes)):
            image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def webp(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(2)]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:], quality=50)
    return out.getvalue()


def distinct(mp4: bytes, seed: int) -> bytes:
    """A copy whose coded picture data differs (clips are never identical in real data, and Parquet
    would dictionary-encode identical values); demuxing and probing are unaffected."""
    payload = mp4.index(b"mdat") + 64
    return mp4[:payload] + seed.to_bytes(8, "little") + mp4[payload + 8 :]


def make_inbox(inbox: Path, videos: int, clips: int, clip_bytes: int) -> None:
    base = noise_mp4(clip_bytes, 0)
    previews = [webp(1), webp(2)]
    for v in range(videos):
        source = f"/videos/v{v:04d}.mp4"
        records = []
        for c in range(clips):
            start, end = c * 2.0, c * 2.0 + 2.0
            records.append(
                ClipRecord(
                    row=c,
                    uuid=derive_clip_uuid(source, start, end, FPS),
                    chunk_index=0,
                    span_start=start,
                    span_end=end,
                    filtered=False,
                    mp4=distinct(base, v * clips + c),
                    windows=[Window(0, 23, previews[0], {"qwen": f"caption {c}"}), Window(24, 47, previews[1])],
                    embeddings={"cosmos-embed1": np.random.default_rng(c).standard_normal(768).astype(np.float32)},
                )
            )
        info = VideoInfo(source, 320, 240, float(FPS), clips * 48, clips * 2.0, "h264", "yuv420p", None, clips, 1)
        write_processed_video(inbox / f"v{v:04d}.mp4.parquet", info, records)


def floor_write(expected: list[tuple[Path, bytes]]) -> float:
    started = time.perf_counter()
    for path, data in expected:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # noqa: PTH123 - the plain write is the point
            handle.write(data)
    return time.perf_counter() - started


def materialize_all(inbox: Path, output: Path, keys: list[str]) -> float:
    resources = build_resources(str(inbox), str(output), WriterSettingsResource(input_path="/videos"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(processed_video_partitions.name, keys)
        started = time.perf_counter()
        for key in keys:
            result = materialize(FAMILIES, partition_key=key, instance=instance, resources=resources)
            assert result.success
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--clip-kb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clip-assets-bench-") as scratch:
        root = Path(scratch)
        make_inbox(root / "inbox", args.videos, args.clips, args.clip_kb * 1024)
        keys = [p.name.removesuffix(".parquet") for p in sorted((root / "inbox").iterdir())]
        floors, firsts, reruns = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(root / "output", ignore_errors=True)
            firsts.append(materialize_all(root / "inbox", root / "output", keys))
            reruns.append(materialize_all(root / "inbox", root / "output", keys))
            expected = [
                (root / "floor" / p.relative_to(root / "output"), p.read_bytes())
                for p in (root / "output").rglob("*")
                if p.is_file() and "_clip_assets" not in p.parts
            ]
            shutil.rmtree(root / "floor", ignore_errors=True)
            floors.append(floor_write(expected))
        total = sum(len(d) for _, d in expected)
        floor = statistics.median(floors)
        print(
            f"workload: {args.videos} videos x {args.clips} clips of {args.clip_kb} KB: "
            f"{len(expected)} files, {total / 1e6:.0f} MB; {args.repeat} repetitions"
        )
        for name, runs in (("floor (plain writes)", floors), ("first materialization", firsts), ("re-run", reruns)):
            median = statistics.median(runs)
            print(
                f"  {name:<24}{median:8.2f} s  (min {min(runs):.2f}, max {max(runs):.2f})"
                f"  ratio to floor {median / floor:6.2f}x   {total / 1e6 / median:7.0f} MB/s"
            )
        print(f"  re-run / first = {statistics.median(reruns) / statistics.median(firsts):.1%}")


if __name__ == "__main__":
    main()
