"""Azurite, Microsoft's Azure Storage emulator (its blob service), in a process of its own on loopback.

Azurite is a Node.js package: `.ci/run` installs the pinned version with npm into a cache folder
(`AZURITE_HOME`), and a workstation gets the same install the first time a test needs it. It is started
with its data in memory, on a free port, and stopped by its process group; its log explains a failure.
It runs as a user would start it, without `--skipApiVersionCheck`: the Blob service version the backend
names must be one Azurite knows. Only when Azurite cannot be installed (no node or npm, no registry) are
the Azure tests skipped, and under CI that is a failure (`processes.unavailable_here`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from pathlib import Path

from clip_assets_tests.support.processes import ServerProcess, free_port, wait_for

VERSION = "3.37.0"
AZURITE_HOME = Path(
    os.environ.get("CLIP_ASSETS_AZURITE_HOME", Path.home() / ".cache" / "clip-assets" / f"azurite-{VERSION}")
)
INSTALL = f"npm install --no-audit --no-fund --prefix {AZURITE_HOME} azurite@{VERSION}"
# Azurite's well-known development account (its documentation publishes the key).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STARTUP_TIMEOUT_S = 60


class AzuriteSetupError(RuntimeError):
    """Azurite could not be installed; the message says what is missing."""


def azurite_script() -> Path:
    """The `azurite-blob` script of the pinned install, made first with npm when it is not there."""
    script = AZURITE_HOME / "node_modules" / ".bin" / "azurite-blob"
    if script.exists():
        return script
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise AzuriteSetupError(f"Azurite {VERSION} is not installed and node/npm are missing: run {INSTALL}")
    AZURITE_HOME.mkdir(parents=True, exist_ok=True)
    with (AZURITE_HOME.parent / f"{AZURITE_HOME.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time; the others wait and reuse it
        if not script.exists():
            done = subprocess.run(INSTALL.split(), capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not script.exists():
                raise AzuriteSetupError(f"{INSTALL} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return script


def connection_string(blob_endpoint: str) -> str:
    """What AZURE_STORAGE_CONNECTION_STRING holds for the development account at `blob_endpoint`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={blob_endpoint}/{ACCOUNT};"
    )


class AzuriteServer:
    """`azurite-blob` in a process group of its own, its data in memory, stopped with the fixture."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            "node",
            str(azurite_script()),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self.port),
            "--inMemoryPersistence",
            "--disableTelemetry",
        ]  # fmt: skip
        self.process = ServerProcess.start("azurite", args, env=dict(os.environ), cwd=log_dir, log_dir=log_dir)
        try:
            wait_for(
                self._accepting,
                STARTUP_TIMEOUT_S,
                "Azurite to accept connections",
                interval_s=0.1,
                retry_on=(OSError,),
                context=self.process.log_tail,
            )
        except BaseException:
            self.stop()
            raise

    def _accepting(self) -> bool:
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"Azurite {self.process.state()}:\n{self.process.log_tail()}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def stop(self) -> None:
        self.process.interrupt()
        self.process.wait_stopped(10)
