"""Throughput against NVIDIA NeMo Curator 1.4.0's real `ClipWriterStage`, fed the same processed videos.

NeMo runs in the virtualenv the README's install command makes (the one the tests use, built and cached
under ~/.cache/clip-assets/ by `clip_assets_tests.support.nemo`), through `benchmarks/nemo_reference.py`
(which turns each processed video's clip chunks into NeMo `VideoTask`s and times the stage). Its wall
time includes reading the Parquet files, as ours does. Optional: when the venv or ffprobe cannot be
had, the benchmark is skipped with the reason, and nothing else is affected.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_local import inbox_for
from benchmarks.harness import REPO_ROOT, Context, Row, Target, Timer, paired_ratios, progress, settle
from benchmarks.runners import engine_write, tree_size
from benchmarks.workloads import INPUT_PATH, Workload
from clip_assets_tests.support.nemo import NemoSetupError
from clip_assets_tests.support.nemo import nemo_python as support_nemo_python

TARGET = Target(">=", 10.0, ">= 10x NeMo")
WALL_RE = re.compile(r"wall time ([0-9.]+) s")
STAGE_RE = re.compile(r"stage time ([0-9.]+) s")


class Unavailable(Exception):
    """NeMo Curator or ffprobe cannot be installed here; the message says what failed."""


def nemo_python() -> Path:
    """The NeMo virtualenv's interpreter (built on first use, about two minutes)."""
    progress("NeMo setup: the README's install command, in a cached virtualenv")
    try:
        return support_nemo_python()
    except NemoSetupError as exc:
        raise Unavailable(str(exc)) from None


def ensure_ffprobe() -> None:
    """NeMo probes every clip with ffprobe: Debian's ffmpeg, installed when missing and we are root."""
    if shutil.which("ffprobe"):
        return
    if os.geteuid() != 0:
        raise Unavailable("ffprobe is missing and installing Debian's ffmpeg needs root (apt-get install -y ffmpeg)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress("NeMo setup: apt-get install -y ffmpeg (for ffprobe)")
    done = subprocess.run(["apt-get", "install", "-y", "ffmpeg"], capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=environment)
        done = subprocess.run(["apt-get", "install", "-y", "ffmpeg"], capture_output=True, text=True, env=environment)
    if done.returncode != 0 or not shutil.which("ffprobe"):
        raise Unavailable("apt-get install -y ffmpeg failed: " + " | ".join(done.stderr.strip().splitlines()[-3:]))


def nemo_once(python: Path, files: Sequence[Path], output: Path) -> tuple[float, float]:
    """One NeMo run over `files` into a fresh `output`; (wall seconds incl. reading, stage seconds)."""
    command = [str(python), str(REPO_ROOT / "benchmarks" / "nemo_reference.py"), *map(str, files)]
    command += ["--output", str(output), "--input-path", INPUT_PATH]
    done = subprocess.run(command, capture_output=True, text=True)
    wall, stage = WALL_RE.search(done.stdout), STAGE_RE.search(done.stdout)
    if done.returncode != 0 or wall is None or stage is None:
        raise RuntimeError(f"nemo_reference.py failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(wall.group(1)), float(stage.group(1))


def ours_once(inbox: Path, keys: Sequence[str], output: Path) -> float:
    settle()
    with Timer() as timer:
        engine_write(str(inbox), str(output), keys)
    return timer.seconds


def run(ctx: Context, workloads: Sequence[Workload]) -> list[Row]:
    try:
        ensure_ffprobe()
        python = nemo_python()
    except Unavailable as reason:
        progress(f"SKIPPED NeMo Curator benchmark: {reason}")
        return []
    rows = []
    for workload in workloads:
        inbox, keys = inbox_for(ctx, workload)
        files = [inbox / f"{key}.parquet" for key in keys]
        out = ctx.scratch / f"nemo-{workload.name}"
        walls: list[float] = []
        stages: list[float] = []
        ours: list[float] = []
        reuse = ctx.measured.get(workload.name, {}).get("engine")
        for index in range(ctx.repeat):
            progress(f"NeMo {workload.name}: repetition {index + 1}/{ctx.repeat}")
            settle()
            wall, stage = nemo_once(python, files, out / "nemo")
            walls.append(wall)
            stages.append(stage)
            nemo_tree = tree_size(out / "nemo")
            shutil.rmtree(out / "nemo")
            if reuse is None:
                ours.append(ours_once(inbox, keys, out / "ours"))
                ours_tree = tree_size(out / "ours")
                shutil.rmtree(out / "ours")
                if ours_tree[0] != nemo_tree[0]:
                    raise RuntimeError(f"NeMo wrote {nemo_tree[0]} files, clip-assets {ours_tree[0]}")
        shutil.rmtree(out, ignore_errors=True)
        ours = reuse or ours
        clips = workload.total_clips
        nemo_rate = [clips / s for s in walls]
        our_rate = [clips / s for s in ours]
        details = {"clips": clips, "nemo_files": nemo_tree[0], "nemo_bytes": nemo_tree[1],
                   "nemo_stage_seconds": stages, "nemo_wall_seconds": walls, "ours_seconds": ours,
                   "ours_from": "the local-write benchmark's engine runs" if reuse else "this benchmark"}  # fmt: skip
        rows.append(
            Row("NeMo Curator", workload.description, "NeMo ClipWriterStage (wall, incl. reading)", "clips/s",
                nemo_rate, "itself", nemo_rate, [1.0] * len(nemo_rate), ratio_label="x NeMo", details=details)
        )  # fmt: skip
        rows.append(
            Row("NeMo Curator", workload.description, "clip-assets engine", "clips/s", our_rate,
                "NeMo clips/s", nemo_rate, paired_ratios(our_rate, nemo_rate), ratio_label="x NeMo",
                target=TARGET, details=details)
        )  # fmt: skip
        dagster = ctx.measured.get(workload.name, {}).get("dagster")
        if dagster:
            dagster_rate = [clips / s for s in dagster]
            rows.append(
                Row("NeMo Curator", workload.description, "clip-assets Dagster, batched", "clips/s", dagster_rate,
                    "NeMo clips/s", nemo_rate, paired_ratios(dagster_rate, nemo_rate), ratio_label="x NeMo",
                    target=TARGET, details=details)
            )  # fmt: skip
    return rows


if __name__ == "__main__":  # `python -m benchmarks.bench_nemo`: prepare the venv and ffprobe only
    try:
        ensure_ffprobe()
        print(nemo_python())
    except Unavailable as reason:
        sys.exit(f"unavailable: {reason}")
