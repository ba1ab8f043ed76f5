"""Discovery: a sensor tick over an inbox of 10,000 processed videos, then the next tick once 10 more arrived.

Measured twice: `clip_assets.discovery.discover` with a cursor (what `clip-assets discover` and the sensor
share), and the real sensor's tick (`evaluate_inbox` via `build_sensor_context`, on-disk SQLite
instance; the partitions its first tick requests are added between ticks, as the daemon would). The floor
is a plain listing of the same inbox, `os.walk` and a `stat` per file: the one thing an incremental scan of
a folder cannot avoid without change notifications. The inbox's files are dated a minute apart up to a
minute ago, as an inbox filled over days; the 10 new files are dated now.

"Incremental" is held as: the next tick costs under a tenth of the first (it repeats no per-file work
but the listing). What stays proportional to the inbox is reported with its own timings: the listing
through the storage interface, and the sensor's read of every known partition key from the instance.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance, SensorResult, build_sensor_context, instance_for_test

from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress, stderr_to
from benchmarks.runners import NAMES, PARTITIONS_PER_RUN
from benchmarks.workloads import add_new_files, build_wide_inbox
from clip_assets.components.sensors import evaluate_inbox
from clip_assets.engine.discovery import DiscoveryCursor, discover
from clip_assets.storage import LocalStorage

NEW_FILES = 10
INCREMENTAL = Target("<=", 0.1, "< 10% of first tick")


def sensor_tick(instance: DagsterInstance, inbox: Path, cursor: str | None = None) -> SensorResult:
    """One evaluation of what the real sensor runs on a tick, as the daemon makes it."""
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        result = evaluate_inbox(context, LocalStorage(inbox), NAMES, PARTITIONS_PER_RUN)
    return result


def plain_listing(root: Path) -> int:
    count = 0
    for directory, _, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(directory, name))  # noqa: PTH116, PTH118 - the plain calls are the floor
            count += 1
    return count


def run(ctx: Context, files: int) -> list[Row]:
    root = ctx.scratch / "discovery"
    inbox = root / "inbox"
    progress(f"discovery: writing an inbox of {files} tiny processed videos")
    existing = build_wide_inbox(inbox, files)
    storage = LocalStorage(inbox)
    names = ("floor", "floor+new", "discover 1", "discover 2", "sensor 1", "sensor 2", "add partitions", "listing",
             "known partitions")  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in names}
    details: dict[str, object] = {}
    for index in range(ctx.repeat):
        progress(f"discovery, {files} files: repetition {index + 1}/{ctx.repeat}")
        shutil.rmtree(inbox / "new", ignore_errors=True)
        with Timer() as timer:
            plain_listing(inbox)
        samples["floor"].append(timer.seconds)
        with Timer() as timer:
            first = discover(storage, DiscoveryCursor())
        samples["discover 1"].append(timer.seconds)
        with instance_for_test() as instance, stderr_to(ctx.log):
            with Timer() as timer:
                tick = sensor_tick(instance, inbox)
            samples["sensor 1"].append(timer.seconds)
            with Timer() as timer:
                for request in tick.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(NAMES.partitions, list(request.partition_keys))
            samples["add partitions"].append(timer.seconds)
            details["first_tick"] = {"videos": len(first.videos), "run_requests": len(tick.run_requests or []),
                                     "cursor_bytes": len(first.cursor.to_str())}  # fmt: skip

            add_new_files(inbox, NEW_FILES, existing[0])
            with Timer() as timer:
                plain_listing(inbox)
            samples["floor+new"].append(timer.seconds)
            with Timer() as timer:
                second = discover(storage, first.cursor)
            samples["discover 2"].append(timer.seconds)
            with Timer() as timer:
                next_tick = sensor_tick(instance, inbox, tick.cursor)
            samples["sensor 2"].append(timer.seconds)
            with Timer() as timer:
                listed = sum(1 for _ in storage.list())
            samples["listing"].append(timer.seconds)
            with Timer() as timer:
                known = len(instance.get_dynamic_partitions(NAMES.partitions))
            samples["known partitions"].append(timer.seconds)
            details["second_tick"] = {"videos": len(second.videos), "run_requests": len(next_tick.run_requests or []),
                                      "listed": listed, "known_partitions": known,
                                      "cursor_bytes": len(second.cursor.to_str())}  # fmt: skip
            if len(second.videos) != NEW_FILES:
                raise RuntimeError(f"the second tick found {len(second.videos)} files, not {NEW_FILES}")
    shutil.rmtree(root)
    details["seconds"] = {
        "storage listing (LocalStorage.list) of the inbox": samples["listing"],
        "instance.get_dynamic_partitions (known partitions, SQLite)": samples["known partitions"],
        "adding the first tick's partitions (the daemon's part)": samples["add partitions"],
    }
    workload = f"{files} processed videos"
    plus = f"{files} + {NEW_FILES} new"
    floor1, floor2 = samples["floor"], samples["floor+new"]
    return [
        Row("discovery", workload, "floor: plain listing (os.walk + stat)", "s", floor1, "itself", floor1,
            [1.0] * len(floor1)),
        Row("discovery", workload, "discover(), first tick (empty cursor)", "s", samples["discover 1"],
            "plain listing", floor1, paired_ratios(samples["discover 1"], floor1), details=details),
        Row("discovery", workload, "sensor, first tick", "s", samples["sensor 1"], "plain listing", floor1,
            paired_ratios(samples["sensor 1"], floor1), details=details),
        Row("discovery", plus, "floor: plain listing (os.walk + stat)", "s", floor2, "itself", floor2,
            [1.0] * len(floor2)),
        Row("discovery", plus, "discover(), next tick (cursor)", "s", samples["discover 2"], "plain listing", floor2,
            paired_ratios(samples["discover 2"], floor2), details=details),
        Row("discovery", plus, "sensor, next tick (cursor)", "s", samples["sensor 2"], "plain listing", floor2,
            paired_ratios(samples["sensor 2"], floor2), details=details),
        Row("discovery", plus, "discover(): next tick / first tick", "s", samples["discover 2"], "first tick",
            samples["discover 1"], paired_ratios(samples["discover 2"], samples["discover 1"]),
            ratio_label="x first tick", target=INCREMENTAL),
        Row("discovery", plus, "sensor: next tick / first tick", "s", samples["sensor 2"], "first tick",
            samples["sensor 1"], paired_ratios(samples["sensor 2"], samples["sensor 1"]), ratio_label="x first tick",
            target=INCREMENTAL),
    ]  # fmt: skip
