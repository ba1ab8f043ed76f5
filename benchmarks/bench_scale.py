"""Scale: wall time and peak RSS of materializing ONE processed video as it grows (10 MB, 100 MB, 1 GB of clips).

Each measurement runs in a fresh process (`python -m benchmarks.bench_scale MODE ...`) that reports its
own peak RSS, nothing subtracted (VmHWM; see `peak_rss_mb` for why not `ru_maxrss` alone); the floor is
a process that only imports the same modules and opens a Dagster instance. Time is held against plain
writes of the produced tree (linear by nature); linearity is the time per MB at the largest size over
the time per MB at the size before it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO_ROOT,
    Context,
    Row,
    Target,
    Timer,
    paired_ratios,
    peak_rss_mb,
    progress,
    ru_maxrss_mb,
    settle,
)
from benchmarks.runners import plain_write, tree
from benchmarks.workloads import MB, build_big_video

RSS_BUDGET_MB = 300.0
LINEARITY = Target("<=", 1.25, "<= 1.25 (linear)")


def child(mode: str, inbox: str, output: str, key: str) -> dict[str, Any]:
    """Runs in the fresh process: import, open an on-disk instance, then (unless `floor`) materialize `key`."""
    started = time.perf_counter()
    from benchmarks import runners

    with runners.embedded_instance() as instance:
        imported = time.perf_counter() - started
        if mode == "floor":
            return {"rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(), "seconds": imported}
        with Timer() as timer:
            if mode == "engine":
                runners.engine_write(inbox, output, [key])
            else:
                runners.add_partitions(instance, [key])
                runners.dagster_write(instance, inbox, output, [key])
        return {
            "rss_mb": peak_rss_mb(),
            "ru_maxrss_mb": ru_maxrss_mb(),
            "seconds": timer.seconds,
            "import_seconds": imported,
        }


def in_fresh_process(mode: str, inbox: Path, output: Path, key: str, log: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_scale", mode, str(inbox), str(output), key]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    with log.open("a") as stderr:
        stderr.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(
            f"{mode} process failed (exit {done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-8:])
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Context, sizes_mb: Sequence[int]) -> list[Row]:
    root = ctx.scratch / "scale"
    floor_rss: list[float] = []
    floor_import: list[float] = []
    for index in range(ctx.repeat):
        progress(f"scale: floor process {index + 1}/{ctx.repeat}")
        result = in_fresh_process("floor", root, root, "", ctx.log)
        floor_rss.append(result["rss_mb"])
        floor_import.append(result["seconds"])
    rows = [
        Row("scale", "any size", "floor: process that imports and opens the instance", "MB RSS", floor_rss, "itself",
            floor_rss, [1.0] * len(floor_rss), details={"import_and_instance_seconds": floor_import})
    ]  # fmt: skip
    per_mb: dict[int, list[float]] = {}
    for size in sizes_mb:
        inbox = root / f"{size}mb" / "inbox"
        progress(f"scale: generating one processed video of {size} MB of clips")
        with Timer() as generation:
            key = build_big_video(inbox, size)
        input_bytes = sum(path.stat().st_size for path in inbox.iterdir())
        measured: dict[str, list[float]] = {
            f"{mode}{suffix}": [] for mode in ("engine", "dagster") for suffix in ("", " rss", " ru_maxrss")
        }
        floors: list[float] = []
        files: list[tuple[Path, bytes]] = []
        for index in range(ctx.repeat):
            progress(f"scale {size} MB: repetition {index + 1}/{ctx.repeat}")
            for mode in ("engine", "dagster"):
                output = root / f"{size}mb" / mode
                settle()
                result = in_fresh_process(mode, inbox, output, key, ctx.log)
                measured[mode].append(result["seconds"])
                measured[f"{mode} rss"].append(result["rss_mb"])
                measured[f"{mode} ru_maxrss"].append(result["ru_maxrss_mb"])
                if not files:
                    files = tree(output)
                shutil.rmtree(output)
            settle()
            with Timer() as timer:
                plain_write(root / f"{size}mb" / "floor", files)
            floors.append(timer.seconds)
            shutil.rmtree(root / f"{size}mb" / "floor")
        output_bytes = sum(len(data) for _, data in files)
        files.clear()
        shutil.rmtree(root / f"{size}mb")
        workload = f"1 video, {size} MB of clips"
        details: dict[str, Any] = {
            "input_bytes": input_bytes,
            "output_bytes": output_bytes,
            "generation_seconds": generation.seconds,
        }
        rss_target = Target("<=", RSS_BUDGET_MB, f"< {RSS_BUDGET_MB:.0f} MB", on_value=True)
        for mode, label in (("engine", "engine"), ("dagster", "Dagster, one run")):
            details = {**details, f"{mode}_ru_maxrss_mb (inherits the parent's peak)": measured[f"{mode} ru_maxrss"]}
            rows.append(
                Row("scale", workload, f"{label}: wall time", "s", measured[mode], "plain writes", floors,
                    paired_ratios(measured[mode], floors), details=details)
            )  # fmt: skip
            rows.append(
                Row("scale", workload, f"{label}: peak RSS", "MB", measured[f"{mode} rss"], "import floor RSS",
                    floor_rss, paired_ratios(measured[f"{mode} rss"], floor_rss),
                    target=rss_target if size == max(sizes_mb) else None, details=details)
            )  # fmt: skip
        per_mb[size] = [seconds / (output_bytes / MB) for seconds in measured["dagster"]]
    ordered = sorted(per_mb)
    if len(ordered) >= 2:
        largest, before = ordered[-1], ordered[-2]
        rows.append(
            Row("scale", f"{before} MB -> {largest} MB", "Dagster: s/MB at the largest / s/MB before", "s/MB",
                per_mb[largest], f"s/MB at {before} MB", per_mb[before], paired_ratios(per_mb[largest], per_mb[before]),
                ratio_label="x", target=LINEARITY)
        )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    print(json.dumps(child(*sys.argv[1:5])))
