"""clip-assets' benchmark suite: one command, workloads generated in a temp dir, every figure a ratio against a floor.

    python -m benchmarks                      # everything, full sizes (about half an hour on 2 cores)
    python -m benchmarks --quick              # smoke run: small sizes, 2 repetitions
    python -m benchmarks --only local,rerun --workloads W2 --repeat 5

Benchmarks (--only/--skip): local (a partition's output vs plain writes), rerun (unchanged partitions vs the
first run), nemo (NeMo Curator 1.4.0's ClipWriterStage, in the tests' venv cached under ~/.cache/clip-assets),
production (a backfill on deploy/'s instance, PostgreSQL, runs launched by the daemon from the queue, vs NeMo),
s3 (vs `aws s3 cp --recursive` to moto's server on loopback), scale (one video of 10 MB to 1 GB: time and
peak RSS), overhead (Dagster per partition: batched vs one run each), discovery (sensor ticks over a big inbox),
dataset (clip index + vectors: one changed video vs a full rebuild at 10k and 100k clips, or --clips; each derived
table's build and update time and peak RSS, the training shards' included; nearest's latency and recall@10 at the
largest size),
exports (training shards and gallery: one added video vs building them from scratch at 10k clips),
partitions (100,000 registered partitions on PostgreSQL: sensor ticks, discover, the UI's partition status, a
backfill of all of them enqueued), scaleout (a run's partitions as Ray tasks on a local cluster: one worker
node vs two, and Dagster's cost per partition at 500 and 5,000 partitions per run).

Prints a Markdown table (medians with min-max over the repetitions, ratios per repetition against the
floor measured in the same run) and writes the raw results as JSON and a PNG plot into --out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Dagster marks backfill_policy beta and partitioned checks preview; the warnings repeat on every import.
warnings.filterwarnings("ignore", message=".*currently in (beta|preview).*")

from benchmarks import (  # noqa: E402 - after the warning filters, which must precede clip_assets' import
    bench_dataset,
    bench_discovery,
    bench_exports,
    bench_local,
    bench_nemo,
    bench_overhead,
    bench_partitions,
    bench_production,
    bench_s3,
    bench_scale,
    bench_scaleout,
)
from benchmarks.harness import (  # noqa: E402
    Context,
    Row,
    code_state,
    disk_free_gb,
    machine,
    plot,
    progress,
    self_ignoring,
    table,
    versions,
    write_json,
)
from benchmarks.workloads import W1, W1_QUICK, W2, W2_QUICK, Workload  # noqa: E402

BENCHMARKS = (
    "local",
    "rerun",
    "nemo",
    "production",
    "s3",
    "scale",
    "overhead",
    "discovery",
    "partitions",
    "dataset",
    "exports",
    "scaleout",
)
FULL: dict[str, Any] = {
    "repeat": 3,
    "scale_mb": [10, 100, 1000],
    "discovery_files": 10_000,
    "overhead_partitions": 200,
    "partitions": 100_000,
}
QUICK: dict[str, Any] = {
    "repeat": 2,
    "scale_mb": [10, 30],
    "discovery_files": 1_000,
    "overhead_partitions": 10,
    "partitions": 300,
}
# Clips in the dataset tables' benchmark (synthetic embeddings), per size.
FULL["dataset_clips"], QUICK["dataset_clips"] = [10_000, 100_000], [2_000, 10_000]
# Clips in the training shards' and gallery's benchmark (16 KB clip files on disk), per size.
FULL["exports_clips"], QUICK["exports_clips"] = [10_000], [2_000]
# Scale-out on Ray: the run of many small partitions (count, clips each), and the partitions per run whose
# Dagster cost is measured.
FULL["scaleout"], QUICK["scaleout"] = (48, 60, [500, 5000]), (12, 30, [50])
# Free space a full run needs at its peak (the 1 GB scale input, its output and the floor's copy).
FULL_RUN_DISK_GB = 6


def names(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 repetitions: a smoke run")
    parser.add_argument("--only", type=names, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", type=names, default=[], help="comma-separated benchmarks to leave out")
    parser.add_argument("--repeat", type=int, help="repetitions per measurement (full: 3, quick: 2)")
    parser.add_argument("--workloads", default="W1,W2", help="local/rerun/nemo/s3 workloads: W1, W2 or both")
    parser.add_argument("--scale-mb", type=int, nargs="+", help="scale sizes in MB of clips (full: 10 100 1000)")
    parser.add_argument("--discovery-files", type=int, help="inbox size for discovery (full: 10000)")
    parser.add_argument("--overhead-partitions", type=int, help="tiny partitions for Dagster overhead (full: 200)")
    parser.add_argument("--partitions", type=int, help="registered partitions for `partitions` (full: 100000)")
    parser.add_argument(
        "--clips", type=int, nargs="+", help="dataset sizes in clips for `dataset` (full: 10000 100000), e.g. 1000000"
    )
    parser.add_argument(
        "--per-run",
        type=int,
        nargs="*",
        help="scaleout: partitions per run whose Dagster cost is measured (full: 500 5000); none given: the "
        "one-node-against-two comparison alone (a few minutes, not an hour)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="where JSON and PNG go")
    parser.add_argument("--tmp", type=Path, help="parent of the scratch folder (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (generated inputs, logs)")
    return parser.parse_args(argv)


def selected_workloads(args: argparse.Namespace) -> list[Workload]:
    available = {"W1": W1_QUICK if args.quick else W1, "W2": W2_QUICK if args.quick else W2}
    chosen = [name.strip().upper() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from W1, W2")
    return [available[name] for name in chosen]


def run_all(
    ctx: Context, args: argparse.Namespace, chosen: list[str], save: Callable[[list[Row], dict[str, Any]], None]
) -> tuple[list[Row], dict[str, Any]]:
    """Each selected benchmark in turn; one that fails is reported and the others still run.

    The load average before and after each is kept (others may share the machine), and the results so
    far are saved after each benchmark, so a late failure loses nothing measured before it.
    """
    sizes = QUICK if args.quick else FULL
    workloads = selected_workloads(args)
    producers: dict[str, Callable[[], list[Row]]] = {
        "local+rerun": lambda: bench_local.run(ctx, workloads, local="local" in chosen, rerun="rerun" in chosen),
        "nemo": lambda: bench_nemo.run(ctx, workloads),
        "production": lambda: bench_production.run(ctx, workloads),
        "s3": lambda: bench_s3.run(ctx, workloads),
        "scale": lambda: bench_scale.run(ctx, args.scale_mb or sizes["scale_mb"]),
        "overhead": lambda: bench_overhead.run(ctx, args.overhead_partitions or sizes["overhead_partitions"]),
        "discovery": lambda: bench_discovery.run(ctx, args.discovery_files or sizes["discovery_files"]),
        "dataset": lambda: bench_dataset.run(ctx, args.clips or sizes["dataset_clips"]),
        "exports": lambda: bench_exports.run(ctx, sizes["exports_clips"]),
        "partitions": lambda: bench_partitions.run(ctx, args.partitions or sizes["partitions"]),
        "scaleout": lambda: bench_scaleout.run(
            ctx, *sizes["scaleout"][:2], sizes["scaleout"][2] if args.per_run is None else args.per_run
        ),
    }
    rows: list[Row] = []
    status: dict[str, Any] = {}
    for name, produce in producers.items():
        if not any(part in chosen for part in name.split("+")):
            continue
        before = os.getloadavg()
        try:
            rows += produce()
            outcome = "ok"
        except Exception:
            outcome = traceback.format_exc()
            progress(f"FAILED {name}, going on with the others:\n{outcome}")
        status[name] = {"load_before": before, "load_after": os.getloadavg(), "outcome": outcome}
        save(rows, status)
    return rows, status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [name for name in (args.only or BENCHMARKS) if name not in args.skip]
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or int(sizes["repeat"])
    started = datetime.datetime.now().astimezone()
    command = " ".join(["python -m benchmarks", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    self_ignoring(args.out)
    parent = args.tmp or Path(tempfile.gettempdir())
    if not args.quick and ("scale" in chosen) and disk_free_gb(parent) < FULL_RUN_DISK_GB:
        progress(f"warning: {disk_free_gb(parent):.0f} GB free under {parent}; a full run needs {FULL_RUN_DISK_GB} GB")
    scratch = Path(tempfile.mkdtemp(prefix="clip-assets-bench-", dir=parent))
    ctx = Context(scratch, repeat, args.quick, scratch / "dagster-and-children.log")
    progress(f"{command}: {', '.join(chosen)}; {repeat} repetitions; scratch {scratch}")
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = args.out / f"results-{stamp}.json", args.out / f"results-{stamp}.png"
    before = machine()
    run: dict[str, Any] = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "repetitions": repeat,
        "benchmarks": chosen,
        "machine": before,
        "versions": versions(),
        "code": code_state(),
    }

    def save(rows: list[Row], status: dict[str, Any]) -> None:
        run["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        run["per_benchmark"] = status
        run["load_average_at_end"] = os.getloadavg()
        write_json(json_path, rows, run)

    try:
        rows, status = run_all(ctx, args, chosen, save)
    finally:
        if args.keep:
            progress(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    title = f"clip-assets benchmarks, {started:%Y-%m-%d %H:%M}, {before['cpu']}, {before['cores']} cores"
    if rows:
        plot(png_path, rows, title)
    print()
    print(f"{command}  ({run['started']} to {run['finished']}, {before['cpu']}, {before['cores']} cores, "
          f"load average at start {before['load_average'][0]:.2f}, at end {os.getloadavg()[0]:.2f})")  # fmt: skip
    print()
    print(table(rows))
    print()
    for row in rows:
        if row.met is False and row.target is not None:
            print(f"target missed: {row.benchmark} / {row.workload} / {row.measurement}: {row.target.text}")
    failed = [name for name, outcome in status.items() if outcome["outcome"] != "ok"]
    for name in failed:
        print(f"benchmark FAILED: {name} (traceback in the JSON)")
    print(f"\nraw results: {json_path}" + (f"\nplot: {png_path}" if rows else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
