"""Where the time goes: one pass of a workload sampled by py-spy, every thread, setup excluded.

    python -m benchmarks.profiling W1 engine          # modes: engine, engine-rerun, dagster, dagster-rerun
    python -m benchmarks.profiling W2 dagster --quick --top 30
    python -m benchmarks.profiling W1 ladder          # the cost of each step on its own, no py-spy

A child process generates nothing and imports everything first; py-spy (`pip install py-spy`; needs
ptrace, so root or CAP_SYS_PTRACE) attaches once the child is ready and samples all its threads until
the measured pass ends. Printed: the share of active samples (idle threads excluded) in which each
function is on the stack (inclusive) and at the top of it (self), Python frames only: time inside a C
call (hashing, a write, a SQLite statement) is billed to the Python line that made it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import REPO_ROOT
from benchmarks.workloads import W1, W1_QUICK, W2, W2_QUICK, build_inbox

MODES = ("engine", "engine-rerun", "dagster", "dagster-rerun", "ladder")


def child(mode: str, inbox: str, output: str) -> None:
    """Set up (imports, warm-up, first run for re-run modes), say READY, wait, then run the measured pass."""
    from benchmarks import runners

    keys = sorted(path.name.removesuffix(".parquet") for path in Path(inbox).iterdir())
    runners.engine_write(inbox, f"{output}-warm", keys)
    with runners.embedded_instance() as instance:
        runners.add_partitions(instance, keys)

        def once() -> None:
            if mode.startswith("engine"):
                runners.engine_write(inbox, output, keys)
            else:
                runners.dagster_write(instance, inbox, output, keys)

        if mode.endswith("rerun"):
            once()
        print("READY", flush=True)
        sys.stdin.readline()
        once()


def ladder(inbox: Path, scratch: Path, repeat: int) -> str:
    """Each step the engine takes, timed on its own over the whole workload, medians of `repeat`.

    The floor writes the finished tree; the engine must also read and decode the input (five families
    stream it, inspection reads every column once), probe and parse media, hash every artifact, and
    publish each file through a staging temp file and a hard link.
    """
    import hashlib
    import os
    import statistics
    import uuid

    from benchmarks import runners
    from benchmarks.harness import Timer, settle
    from clip_assets.contract import ProcessedVideoReader
    from clip_assets.contract.reader import ALL_COLUMNS
    from clip_assets.engine.inspection import inspect_video

    keys = sorted(path.name.removesuffix(".parquet") for path in inbox.iterdir())
    files = [inbox / f"{key}.parquet" for key in keys]
    runners.engine_write(str(inbox), str(scratch / "tree"), keys)
    tree = runners.tree(scratch / "tree")
    shutil.rmtree(scratch / "tree")

    def read_all() -> None:
        for path in files:
            with path.open("rb") as handle, ProcessedVideoReader(handle, str(path)) as reader:
                for _ in reader.iter_clips(ALL_COLUMNS):
                    pass

    def inspect_all() -> None:
        for path in files:
            with path.open("rb") as handle, ProcessedVideoReader(handle, str(path)) as reader:
                inspect_video(reader)

    def hash_all() -> None:
        for _, data in tree:
            hashlib.sha256(data).hexdigest()

    def staged_write() -> None:
        staging = scratch / "staged" / "_staging"
        staging.mkdir(parents=True)
        for relative, data in tree:
            target = scratch / "staged" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir(parents=True, exist_ok=True)
            temp = staging / f"{uuid.uuid4().hex}.tmp"
            temp.write_bytes(data)
            os.link(temp, target)
            target.stat()
            temp.unlink()

    steps: dict[str, Callable[[], None]] = {
        "floor: plain writes of the output tree": lambda: runners.plain_write(scratch / "plain", tree),
        "publish as LocalStorage does (mkdir x2, temp file, link, stat, unlink), 1 thread": staged_write,
        "sha256 of every artifact": hash_all,
        "read every column of every input clip (reader.iter_clips)": read_all,
        "inspection (read every column + probe MP4s + parse WebPs)": inspect_all,
        "engine: every family of every partition": lambda: runners.engine_write(str(inbox), str(scratch / "e"), keys),
    }
    lines = [f"{len(tree)} files, {sum(len(d) for _, d in tree) / 1e6:.0f} MB; medians of {repeat}"]
    floor = 0.0
    for label, step in steps.items():
        seconds = []
        for _ in range(repeat):
            settle()
            with Timer() as timer:
                step()
            seconds.append(timer.seconds)
            for leftover in ("plain", "staged", "e"):
                shutil.rmtree(scratch / leftover, ignore_errors=True)
        median = statistics.median(seconds)
        floor = floor or median
        lines.append(f"  {median:8.3f} s  {median / floor:6.2f}x floor  {label}")
    return "\n".join(lines)


def frame_name(frame: str) -> str:
    """`function (path/to/file.py:123)` -> `function (file.py)`: lines of one function counted together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rsplit(':', 1)[0]).name})" if where else name


def summarize(raw: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} active samples, all threads", "", "inclusive share (function on the stack):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in inclusive.most_common(top)]
    lines += ["", "self share (function at the top: its own Python line, or a C call it made):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in own.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["W1", "W2"])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--quick", action="store_true", help="the quick suite's smaller workload")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--save", type=Path, help="also keep py-spy's raw stacks here")
    parser.add_argument("--repeat", type=int, default=3, help="ladder: repetitions per step")
    args = parser.parse_args()
    if shutil.which("py-spy") is None and args.mode != "ladder":
        sys.exit("py-spy is missing: pip install py-spy")
    workload = {"W1": W1_QUICK if args.quick else W1, "W2": W2_QUICK if args.quick else W2}[args.workload]
    with tempfile.TemporaryDirectory(prefix="clip-assets-profile-") as scratch:
        root = Path(scratch)
        print(f"generating {workload.description}", file=sys.stderr)
        build_inbox(workload, root / "inbox")
        if args.mode == "ladder":
            print(f"{workload.description}, each step on its own:")
            print(ladder(root / "inbox", root, args.repeat))
            return 0
        command = [sys.executable, "-m", "benchmarks.profiling", "--child", args.mode, str(root / "inbox")]
        worker = subprocess.Popen(
            [*command, str(root / "output")], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert worker.stdin is not None and worker.stdout is not None
        while worker.stdout.readline().strip() != "READY":
            if worker.poll() is not None:
                sys.exit("the child failed before it was ready")
        raw = root / "stacks.txt"
        sampling = ["--threads", "--format", "raw", "--rate", str(args.rate), "--output", str(raw), "--nonblocking"]
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(worker.pid), *sampling],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(["sleep", "1"], check=True)  # py-spy attaches
        worker.stdin.write("go\n")
        worker.stdin.flush()
        worker.wait()
        spy.wait()
        if args.save:
            shutil.copy(raw, args.save)
        print(f"{workload.description}, {args.mode}:")
        print(summarize(raw, args.top))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        sys.exit(main())
