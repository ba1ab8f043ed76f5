"""In-process clip probing speed (what NeMo Curator does with an ffprobe process per clip).

    python benchmarks/probe_speed.py [--frames 48 --repeat 200]

Encodes one 1080p H.264 clip with PyAV, then times `probe_mp4` on its bytes.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import av
import numpy as np

from clip_assets.media.probe import probe_mp4


def clip(frames: int) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"crf": "28", "preset": "ultrafast"}
        for _ in range(frames):
            image = (rng.integers(0, 32, (1080, 1920, 3), dtype=np.uint8) * 8).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    data = clip(args.frames)
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        probe = probe_mp4(data)
        times.append(time.perf_counter() - started)
    print(
        f"probe_mp4 on a {len(data) / 1e6:.1f} MB 1080p clip of {probe.num_frames} frames: "
        f"median {statistics.median(times) * 1000:.2f} ms (min {min(times) * 1000:.2f}, max {max(times) * 1000:.2f})"
    )


if __name__ == "__main__":
    main()
