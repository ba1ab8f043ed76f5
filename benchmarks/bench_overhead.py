"""Dagster's per-partition overhead: a batched backfill (ranges of PARTITIONS_PER_RUN) against one run per partition.

Tiny partitions (two 8-frame clips each), so the writing itself is negligible and what is left is run
machinery. The floor is the engine writing the same partitions without Dagster. Each repetition uses a
fresh output folder and a fresh on-disk SQLite instance. Runs are in-process runs of the curate job
(`run_backfill`): a deployment's run launcher also starts a process per run, whose import cost the
scale benchmark's floor process shows (`import_and_instance_seconds`).
"""

from __future__ import annotations

import shutil

from benchmarks.harness import Context, Row, Timer, paired_ratios, progress, settle, stderr_to
from benchmarks.runners import PARTITIONS_PER_RUN, add_partitions, dagster_write, embedded_instance, engine_write
from benchmarks.workloads import build_tiny_inbox


def run(ctx: Context, partitions: int) -> list[Row]:
    root = ctx.scratch / "overhead"
    inbox = root / "inbox"
    keys = build_tiny_inbox(inbox, partitions)
    engine_write(str(inbox), str(root / "warm"), keys)  # warm-up
    shutil.rmtree(root / "warm")
    samples: dict[str, list[float]] = {"engine": [], "batched": [], "single": []}
    runs: dict[str, int] = {}
    for index in range(ctx.repeat):
        progress(f"Dagster overhead, {partitions} tiny partitions: repetition {index + 1}/{ctx.repeat}")
        settle()
        with Timer() as timer:
            engine_write(str(inbox), str(root / "engine"), keys)
        samples["engine"].append(timer.seconds / partitions)
        shutil.rmtree(root / "engine")
        for mode in ("batched", "single"):
            with embedded_instance() as instance, stderr_to(ctx.log):
                add_partitions(instance, keys)
                settle()
                with Timer() as timer:
                    runs[mode] = dagster_write(instance, str(inbox), str(root / mode), keys, batched=mode == "batched")
                samples[mode].append(timer.seconds / partitions)
            shutil.rmtree(root / mode)
    shutil.rmtree(root)
    workload = f"{partitions} tiny partitions"
    engine, batched, single = samples["engine"], samples["batched"], samples["single"]
    return [
        Row("Dagster overhead", workload, "floor: engine, no Dagster", "s/partition", engine, "itself", engine,
            [1.0] * len(engine)),
        Row("Dagster overhead", workload, f"batched: {runs['batched']} run(s) of <= {PARTITIONS_PER_RUN} partitions",
            "s/partition", batched, "engine", engine, paired_ratios(batched, engine),
            details={"overhead_s_per_partition": [b - e for b, e in zip(batched, engine, strict=True)]}),
        Row("Dagster overhead", workload, f"one run per partition ({runs['single']} runs)", "s/partition", single,
            "engine", engine, paired_ratios(single, engine),
            details={"overhead_s_per_partition": [s - e for s, e in zip(single, engine, strict=True)]}),
        Row("Dagster overhead", workload, "one run per partition / batched", "s/partition", single,
            "batched", batched, paired_ratios(single, batched), ratio_label="x batched"),
    ]  # fmt: skip
