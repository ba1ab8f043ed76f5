"""What every benchmark reports, and how: rows of samples against a floor measured in the same run.

A row is one measurement (seconds, MB, clips/s) repeated a few times, with the floor it is compared
against and the per-repetition ratios. The table shows medians with the min-max spread; the JSON keeps
every raw sample; the PNG draws each row's ratio with its spread and the target it is held to.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """A bound on a row's median ratio (or, `on_value`, on its median value itself): `op` is "<=" or ">="."""

    op: str
    value: float
    text: str
    on_value: bool = False

    def met(self, figure: float) -> bool:
        return figure <= self.value if self.op == "<=" else figure >= self.value


@dataclass
class Row:
    """One measurement of one benchmark, repeated; `ratios` are per repetition against `floor`."""

    benchmark: str
    workload: str
    measurement: str
    unit: str
    samples: list[float]
    floor: str
    floor_samples: list[float]
    ratios: list[float]
    ratio_label: str = "x floor"
    target: Target | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.median if self.target.on_value else self.ratio)


def paired_ratios(values: Sequence[float], floors: Sequence[float]) -> list[float]:
    """value / floor per repetition when both were measured in the same repetitions, else against the floor's median."""
    if len(values) == len(floors):
        return [v / f if f else float("inf") for v, f in zip(values, floors, strict=True)]
    floor = statistics.median(floors)
    return [v / floor if floor else float("inf") for v in values]


def spread(values: Sequence[float], digits: int) -> str:
    """`median (min-max)`, or the value alone when it was measured once."""
    median = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def digits_for(values: Sequence[float]) -> int:
    median = abs(statistics.median(values))
    if median >= 100:
        return 0
    if median >= 10:
        return 1
    if median >= 0.1:
        return 2
    return 4


class Timer:
    """perf_counter around a block: `with Timer() as t: ...; t.seconds`."""

    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started


def settle() -> None:
    """Flush dirty pages before a timed section, so the previous one's writeback is not billed to it."""
    os.sync()


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (Dagster's console log, warnings) to a file while timing, so it stays out of the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM of its address space.

    `ru_maxrss` is reported too, but on Linux it carries the spawning process's peak across fork and exec
    (the kernel folds the pre-exec address space's high-water mark into it), so a child spawned by this
    suite, which holds generated inputs in memory, would report the suite's size, not its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def progress(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def repeat(times: int, label: str, step: Callable[[int], None]) -> None:
    for index in range(times):
        progress(f"{label}: repetition {index + 1}/{times}")
        step(index)


# --- the machine ---------------------------------------------------------------------------------


@dataclass
class Context:
    """What one invocation shares between benchmarks: scratch space, repetitions, generated inputs, measurements."""

    scratch: Path
    repeat: int
    quick: bool
    log: Path
    # workload name -> (inbox folder, partition keys), generated once per invocation
    inboxes: dict[str, tuple[Path, list[str]]] = field(default_factory=dict)
    # workload name -> measurement -> samples, so a later benchmark can reuse an earlier one's
    measured: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def record(self, workload: str, measurement: str, samples: list[float]) -> None:
        self.measured.setdefault(workload, {})[measurement] = samples


def machine() -> dict[str, Any]:
    """CPU, cores, memory, the temp dir's disk and the load: what the figures depend on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    temp = os.environ.get("TMPDIR", "/tmp")
    disk = subprocess.run(["df", "-h", "--output=source,fstype,size,avail", temp], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "temp_dir": temp,
        "temp_disk": " ".join(disk.stdout.split()[4:]) if disk.returncode == 0 else "unknown",
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, and whether the package had uncommitted changes (others may be editing it)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    changes = git("status", "--porcelain", "clip_assets")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_in_clip_assets": changes}


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("dagster", "pyarrow", "av", "pillow", "boto3", "moto", "awscli"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


# --- output --------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    """A Markdown table: pasteable into docs/performance.md as printed."""
    header = "| benchmark | workload | measurement | median (min-max) | floor | ratio median (min-max) | target | met |"
    lines = [header, "|---|---|---|---:|---|---:|---|---|"]
    for row in rows:
        value = f"{spread(row.samples, digits_for(row.samples))} {row.unit}"
        ratio = f"{spread(row.ratios, 3 if row.ratio < 0.1 else 2)} {row.ratio_label}"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        target = row.target.text if row.target else ""
        cells = (row.benchmark, row.workload, row.measurement, value, row.floor, ratio, target, met)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[Row], run: dict[str, Any]) -> None:
    document = {
        **run,
        "rows": [
            {**asdict(row), "median": row.median, "ratio": row.ratio, "met": row.met}
            for row in rows  # raw samples included
        ],
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """One panel per benchmark: each row's median ratio, its min-max as an error bar, its target as a dashed tick."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    benchmarks = list(dict.fromkeys(row.benchmark for row in rows))
    heights = [0.5 * sum(r.benchmark == b for r in rows) + 0.9 for b in benchmarks]
    fig, axes = plt.subplots(
        len(benchmarks), 1, figsize=(13, sum(heights) + 1), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    for axis, benchmark in zip(axes[:, 0], benchmarks, strict=True):
        mine = [r for r in rows if r.benchmark == benchmark]
        labels = [textwrap.fill(f"{r.workload}: {r.measurement}", 60) for r in mine]
        medians = [r.ratio for r in mine]
        low = [r.ratio - min(r.ratios) for r in mine]
        high = [max(r.ratios) - r.ratio for r in mine]
        colors = ["#9ca3af" if r.met is None else ("#059669" if r.met else "#dc2626") for r in mine]
        positions = range(len(mine))
        axis.barh(positions, medians, xerr=[low, high], color=colors, capsize=3, height=0.6)
        for position, row in zip(positions, mine, strict=True):
            if row.target is not None and not row.target.on_value:
                axis.plot([row.target.value] * 2, [position - 0.4, position + 0.4], color="black", linestyle="--")
            axis.annotate(f"  {row.ratio:.3g} {row.ratio_label}", (max(row.ratios), position), va="center", fontsize=7)
        axis.set_yticks(list(positions), labels, fontsize=7)
        axis.invert_yaxis()
        positive = [v for r in mine for v in r.ratios if v > 0]
        if positive and max(positive) / min(positive) > 50:
            axis.set_xscale("log")
        axis.margins(x=0.15)
        axis.set_title(benchmark, fontsize=9, loc="left", fontweight="bold")
        axis.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        f"{title}\nbars: median ratio against the floor of the same run; whiskers: min-max over repetitions; "
        "dashed: target; green met, red missed, grey no target",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def self_ignoring(directory: Path) -> None:
    """Results are per machine: a `.gitignore` of `*` keeps them out of commits without touching the repo's."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".gitignore").write_text("*\n")


def disk_free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9
