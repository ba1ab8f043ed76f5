"""Local write and re-run: a partition's whole output against plain writes of the same bytes.

Per repetition, interleaved so load drifts hit every measurement alike: the floor (the produced tree
replayed with `open().write()`), the engine's first write and its re-run of the unchanged partitions,
then Dagster's first batched materialization and its re-run on a fresh embedded instance.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress, settle, stderr_to
from benchmarks.runners import (
    add_partitions,
    dagster_write,
    embedded_instance,
    engine_write,
    plain_write,
    tree,
    tree_size,
)
from benchmarks.workloads import Workload, build_inbox

TARGETS = {"W1": 1.3, "W2": 1.5}
RERUN_TARGET = Target("<=", 0.05, "< 5% of first run")


def inbox_for(ctx: Context, workload: Workload) -> tuple[Path, list[str]]:
    """The workload's inbox, generated once per invocation and shared by every benchmark that uses it."""
    if workload.name not in ctx.inboxes:
        inbox = ctx.scratch / f"inbox-{workload.name}"
        progress(f"generating {workload.description} in {inbox}")
        ctx.inboxes[workload.name] = (inbox, build_inbox(workload, inbox))
    return ctx.inboxes[workload.name]


def measure_workload(ctx: Context, workload: Workload) -> dict[str, list[float]]:
    inbox, keys = inbox_for(ctx, workload)
    out = ctx.scratch / f"local-{workload.name}"
    warm = out / "warm"
    progress(f"{workload.name}: warm-up write (imports, code digest, page cache), then the tree to replay")
    engine_write(str(inbox), str(warm), keys)
    files = tree(warm)
    shutil.rmtree(warm)
    samples: dict[str, list[float]] = {
        name: [] for name in ("floor", "engine", "engine rerun", "engine sequential", "dagster", "dagster rerun")
    }
    sizes: dict[str, tuple[int, int]] = {}

    def one(index: int) -> None:
        progress(f"{workload.name}: repetition {index + 1}/{ctx.repeat}")
        settle()
        with Timer() as timer:
            plain_write(out / "floor", files)
        samples["floor"].append(timer.seconds)
        shutil.rmtree(out / "floor")

        settle()
        with Timer() as timer:
            engine_write(str(inbox), str(out / "engine"), keys)
        samples["engine"].append(timer.seconds)
        settle()
        with Timer() as timer:
            engine_write(str(inbox), str(out / "engine"), keys)
        samples["engine rerun"].append(timer.seconds)
        sizes["engine"] = tree_size(out / "engine")
        shutil.rmtree(out / "engine")
        settle()
        with Timer() as timer:
            engine_write(str(inbox), str(out / "sequential"), keys, read_ahead=False)
        samples["engine sequential"].append(timer.seconds)
        shutil.rmtree(out / "sequential")

        with embedded_instance() as instance, stderr_to(ctx.log):
            add_partitions(instance, keys)
            settle()
            with Timer() as timer:
                dagster_write(instance, str(inbox), str(out / "dagster"), keys)
            samples["dagster"].append(timer.seconds)
            settle()
            with Timer() as timer:
                dagster_write(instance, str(inbox), str(out / "dagster"), keys)
            samples["dagster rerun"].append(timer.seconds)
        sizes["dagster"] = tree_size(out / "dagster")
        shutil.rmtree(out / "dagster")

    for index in range(ctx.repeat):
        one(index)
    shutil.rmtree(out, ignore_errors=True)
    expected = (len(files), sum(len(data) for _, data in files))
    for name, (count, size) in sizes.items():
        # Byte counts differ by the output root's length, which NeMo's metadata JSON names (`clip_location`).
        if count != expected[0] or abs(size - expected[1]) > 0.001 * expected[1]:
            raise RuntimeError(f"{workload.name}: {name} wrote {count} files, {size} bytes; the floor {expected}")
    samples["files"] = [float(expected[0])]
    samples["bytes"] = [float(expected[1])]
    for name in ("engine", "dagster"):
        ctx.record(workload.name, name, samples[name])
    return samples


def rows_for(workload: Workload, samples: dict[str, list[float]], local: bool, rerun: bool) -> list[Row]:
    files, size = int(samples["files"][0]), samples["bytes"][0]
    floors = samples["floor"]
    common = {"files": files, "bytes": int(size), "clips": workload.total_clips, "partitions": workload.videos}
    target = Target("<=", TARGETS.get(workload.name, 2.0), f"<= {TARGETS.get(workload.name, 2.0):g}x floor")
    rows = []
    if local:
        rows.append(
            Row("local write", workload.description, "floor: plain open().write()", "s", floors, "itself",
                floors, [1.0] * len(floors), details={**common, "MB_per_s": [size / 1e6 / s for s in floors]})
        )  # fmt: skip
        for name, label in (
            ("engine", "engine (no Dagster run machinery)"),
            ("engine sequential", "engine, read ahead off (each partition read in its own turn)"),
            ("dagster", "Dagster, batched runs"),
        ):
            values = samples[name]
            rows.append(
                Row("local write", workload.description, label, "s", values, "plain writes",
                    floors, paired_ratios(values, floors), target=None if name == "engine sequential" else target,
                    details={**common, "MB_per_s": [size / 1e6 / s for s in values],
                             "clips_per_s": [workload.total_clips / s for s in values]})
            )  # fmt: skip
    if rerun:
        for name, label in (("engine", "engine re-run"), ("dagster", "Dagster re-run, batched")):
            values, firsts = samples[f"{name} rerun"], samples[name]
            rows.append(
                Row("re-run", workload.description, label, "s", values, f"first run ({name})", firsts,
                    paired_ratios(values, firsts), ratio_label="x first run", target=RERUN_TARGET,
                    details={**common, "seconds_per_partition": [s / workload.videos for s in values],
                             "ratio_to_plain_writes": paired_ratios(values, floors)})
            )  # fmt: skip
    return rows


def run(ctx: Context, workloads: Sequence[Workload], local: bool = True, rerun: bool = True) -> list[Row]:
    rows = []
    for workload in workloads:
        rows.extend(rows_for(workload, measure_workload(ctx, workload), local, rerun))
    return rows
