"""Server processes on loopback for tests: a free port, a bounded wait, and servers in process groups of
their own whose logs explain a failure. Used by the S3 endpoint, the deployment and the browser test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")


def unavailable_here(reason: str) -> NoReturn:
    """A test whose prerequisite this machine lacks: skipped on a workstation, failed under CI (the `CI`
    variable set, as `.ci/run` and CI systems do), where a silent skip would hide a test that never ran."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI must provide it, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.25,
    retry_on: tuple[type[Exception], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy, for at most `timeout_s`; return that.

    An exception the probe raises fails the wait at once (an AssertionError from a "fail now" check must
    not wait out the deadline), except those in `retry_on`: a server still starting refuses connections
    (`OSError`). The timeout names `what`, the last value or retried error, and `context()` (logs).
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = probe()
        except retry_on as error:
            last = error
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            details = context() if context else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})\n{details}")
        time.sleep(interval_s)


def script_path(name: str) -> str:
    """A console script of this interpreter's installation (`dagster`, `clip-assets`), else the one on PATH;
    an absolute path (a server binary a package ships) as it is."""
    if Path(name).is_absolute():
        return name
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


@dataclass
class ServerProcess:
    """A server in a session (process group) of its own, so that stopping it also stops what it spawned
    (code servers, run workers); its stdout and stderr go to one log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_dir: Path
    ) -> ServerProcess:
        """Run `args`, its first item a console script (see `script_path`), logging to `log_dir/<name>.log`."""
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [script_path(args[0]), *args[1:]],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def state(self) -> str:
        code = self.popen.poll()
        return "running" if code is None else f"exited with {code}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def interrupt(self) -> None:
        """SIGINT to the whole group (Dagster's servers shut down cleanly on it)."""
        self._signal_group(signal.SIGINT)

    def wait_stopped(self, timeout_s: float = 15) -> None:
        """Wait for the group to end after `interrupt`; SIGKILL to whatever of it is left after `timeout_s`.

        Children that outlive the leader (a code server, a run worker) share its group and are waited
        for, then killed, too: nothing of the server survives the test.
        """
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._group_alive():
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signum)  # start_new_session: the group's id is the leader's pid

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


@dataclass
class ServerGroup:
    """Servers started together with one environment: any of them exiting fails a wait at once, with
    every server's log; stopped together, the last started first."""

    env: dict[str, str]
    cwd: Path
    log_dir: Path
    processes: list[ServerProcess] = field(default_factory=list, kw_only=True)

    def start(self, name: str, args: Sequence[str]) -> ServerProcess:
        process = ServerProcess.start(name, args, env=self.env, cwd=self.cwd, log_dir=self.log_dir)
        self.processes.append(process)
        return process

    def process(self, name: str) -> ServerProcess:
        return next(p for p in self.processes if p.name == name)

    def logs(self, lines: int = 40) -> str:
        parts = []
        for process in self.processes:
            parts.append(f"----- {process.name} (pid {process.pid}, {process.state()}), last {lines} lines -----")
            parts.append(process.log_tail(lines))
        return "\n".join(parts)

    def ensure_running(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} {process.state()}\n{self.logs(80)}")

    def wait(
        self,
        probe: Callable[[], T | None],
        timeout_s: float,
        what: str,
        *,
        interval_s: float = 0.25,
        retry_on: tuple[type[Exception], ...] = (),
        context: Callable[[], str] | None = None,
    ) -> T:
        """`wait_for`, failing at once when a server has exited, with `context()` (what the caller waits
        on: runs, say) and the servers' logs on a timeout."""

        def while_running() -> T | None:
            self.ensure_running()
            return probe()

        def details() -> str:
            return f"{context()}\n{self.logs()}" if context else self.logs()

        return wait_for(while_running, timeout_s, what, interval_s=interval_s, retry_on=retry_on, context=details)

    def stop(self, timeout_s: float = 15) -> None:
        for process in reversed(self.processes):  # the last started first: a daemon launches nothing more
            process.interrupt()
        for process in self.processes:
            process.wait_stopped(timeout_s)


# ---------------------------------------------------------------------------------------------------
# Finding processes (Linux /proc, no dependency)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command's name (which is in parentheses and may contain spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def end_session(session_id: int) -> list[int]:
    """SIGKILL every process still in a session a test opened (a child started with start_new_session=True,
    whose pid is the session's id): Ray's workers, which NeMo's executors start, outlive the pipeline's
    process, reparented to init, where `descendants` no longer finds them. Returns the pids ended."""
    ended = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == session_id:
                with suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    ended.append(int(entry.name))
    return ended


def descendants(root: int) -> list[int]:
    parents = {pid: _parent_of(pid) for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())}
    found: list[int] = []
    frontier = [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found
