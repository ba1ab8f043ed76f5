"""Peak memory of materializing one partition as its processed video grows.

    python benchmarks/partition_memory.py [--clips 50 400]

For each size, a processed video of that many ~1.7 MB clips is built in one process, then a fresh
process materializes every output family of it and reports its peak RSS, next to the RSS of a
process that only imports clip-assets and opens a Dagster instance (the floor).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import local_write


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, root: Path, clips: int) -> None:
    if mode == "build":
        local_write.make_inbox(root / "inbox", 1, clips, 1024 * 1024)
    elif mode == "floor":
        from dagster import instance_for_test

        import clip_assets.definitions  # noqa: F401 - the import cost is the point

        with instance_for_test():
            pass
        print(f"{peak_rss_mb():.0f}")
    else:
        started = time.perf_counter()
        local_write.materialize_all(root / "inbox", root / "output", ["v0000.mp4"])
        print(f"{peak_rss_mb():.0f} {time.perf_counter() - started:.2f}")


def run(mode: str, root: Path, clips: int) -> str:
    """The last line the child printed (the build step prints nothing)."""
    command = [sys.executable, __file__, "--child", mode, str(root), str(clips)]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, root, clips = args.child
        child(mode, Path(root), int(clips))
        return
    with tempfile.TemporaryDirectory(prefix="clip-assets-mem-") as scratch:
        floor = float(run("floor", Path(scratch), 0))
        print(f"floor (imports + Dagster instance): {floor:.0f} MB peak RSS")
        for clips in args.clips:
            root = Path(scratch) / str(clips)
            run("build", root, clips)
            size = sum(p.stat().st_size for p in (root / "inbox").iterdir()) / 1e6
            rss, seconds = run("materialize", root, clips).split()
            print(
                f"{clips:5d} clips, processed video {size:7.0f} MB: peak RSS {float(rss):5.0f} MB "
                f"({float(rss) / floor:.2f}x floor), {seconds} s"
            )


if __name__ == "__main__":
    main()
