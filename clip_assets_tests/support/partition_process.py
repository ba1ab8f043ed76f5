"""Materialize one partition in a process of its own, so a test can kill it or run it as another user.

    python -m clip_assets_tests.support.partition_process INBOX OUTPUT DAGSTER_HOME PARTITION_KEY [MAX_WORKERS]

Prints each step failure's message and exits 1 when the run fails. S3 is reached through the standard
AWS variables and CLIP_ASSETS_S3_*, as in a deployment. With BARRIER_VAR set to a folder, the run says
it is ready there once its imports are done (`<pid>.ready`) and waits for a `go` file, so that processes
started together write together (`release_together`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, materialize

from clip_assets.components.environment import configured
from clip_assets.components.resources import WriterSettingsResource, s3_connection
from clip_assets.storage import lease
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos
from clip_assets_tests.support.processes import wait_for

BARRIER_VAR = "CLIP_ASSETS_TEST_BARRIER"
# Seconds a lease of the child lasts (SHORT_LEASES): a killed run's lease is then waited out in seconds.
LEASE_TTL_VAR = "CLIP_ASSETS_TEST_LEASE_TTL_S"
SHORT_LEASE_TTL_S = 8.0
SHORT_LEASES = {LEASE_TTL_VAR: str(SHORT_LEASE_TTL_S)}


def short_lease_margins(ttl_s: float = SHORT_LEASE_TTL_S) -> tuple[float, float]:
    """A short lease's renewal interval and clock-skew margin: a quarter of its TTL each."""
    return ttl_s / 4, ttl_s / 4


def use_short_leases(ttl_s: float = SHORT_LEASE_TTL_S) -> None:
    """Leases of `ttl_s` in this process, with `short_lease_margins`.

    A re-run after a killed run waits out the killed run's lease: lease.TTL_S + CLOCK_SKEW_S, 150 s, on
    every store but local disk. Expiry, renewal and takeover run the same code at this scale."""
    lease.TTL_S = ttl_s
    lease.RENEW_EVERY_S, lease.CLOCK_SKEW_S = short_lease_margins(ttl_s)


def spawn(
    inbox: Path,
    output: str,
    home: Path,
    partition_key: str,
    max_workers: int = 1,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
) -> subprocess.Popen[str]:
    """This module in a child process (its stdout piped, as text); `prefix` runs it as another user."""
    home.mkdir(parents=True, exist_ok=True)
    command = [*(prefix or []), sys.executable, "-m", "clip_assets_tests.support.partition_process"]
    return subprocess.Popen(
        [*command, str(inbox), output, str(home), partition_key, str(max_workers)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_when(process: subprocess.Popen[str], condition: Callable[[], bool], timeout_s: float = 120) -> None:
    """SIGKILL the run as soon as `condition()` holds (polled every 2 ms); fails if it ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()


def release_together(barrier: Path, runs: list[subprocess.Popen[str]], timeout_s: float = 300) -> None:
    """Wait until every run (spawned with BARRIER_VAR=barrier) is ready, then let them all go at once."""
    wait_for(
        lambda: all((barrier / f"{run.pid}.ready").exists() or run.poll() is not None for run in runs),
        timeout_s,
        "every run to be ready",
        interval_s=0.05,
    )
    (barrier / "go").touch()


def _wait_at_barrier(barrier: Path) -> None:
    (barrier / f"{os.getpid()}.ready").touch()
    while not (barrier / "go").exists():
        time.sleep(0.005)


def main(inbox: str, output: str, home: str, partition_key: str, max_workers: str = "2") -> int:
    if LEASE_TTL_VAR in os.environ:
        use_short_leases(float(os.environ[LEASE_TTL_VAR]))
    if BARRIER_VAR in os.environ:
        _wait_at_barrier(Path(os.environ[BARRIER_VAR]))
    instance = DagsterInstance.from_config(home)
    if partition_key not in instance.get_dynamic_partitions(PARTITIONS_NAME):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])
    settings = WriterSettingsResource(input_path="/videos", max_workers=int(max_workers))
    result = materialize(
        [processed_videos, *FAMILY_ASSETS],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, settings, s3_connection(configured)),
        raise_on_error=False,
    )
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            print(event.event_specific_data.error.cause.message, flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
