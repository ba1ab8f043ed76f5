"""LocalStack's S3 provider as a second S3 implementation: a host process on loopback, no Docker.

moto accepts a PUT or part whose `x-amz-checksum-sha256` or `Content-MD5` does not match its body;
LocalStack's S3 provider refuses it (BadDigest), as AWS does, and it implements conditional writes
on its own code path. LocalStack's pins conflict with the project's (boto3, botocore), so it lives
in a virtualenv of its own made by `INSTALL`, cached under ~/.cache/clip-assets keyed by the command
and the Python version, as support/nemo.py does for NeMo. The extra pins are what 4.13.1 needs on
today's PyPI: cbor2 6 dropped the module its serializer imports, pyOpenSSL 25 the certificate call
its startup makes. Served by hypercorn (LocalStack's twisted server needs service_identity, which
its wheel does not declare). If it cannot be built or started, the tests that need it fail with
the installer's or the server's output under CI, and are skipped on a workstation.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from clip_assets_tests.support.processes import free_port, wait_for

INSTALL = "pip install 'localstack-core[runtime]==4.13.1' 'cbor2<6' 'pyopenssl<25'"
CACHE = Path.home() / ".cache" / "clip-assets"
STARTUP_TIMEOUT_S = 120


class LocalStackSetupError(RuntimeError):
    """The LocalStack virtualenv could not be built, or the server did not start; the message says why."""


def localstack_python() -> Path:
    """The interpreter of the cached virtualenv, built first if needed (a few minutes)."""
    key = hashlib.sha256("\n".join([INSTALL, sys.version]).encode()).hexdigest()[:16]
    venv = CACHE / f"localstack-{key}"
    python = venv / "bin" / "python"
    stamp = venv / "clip-assets-ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{venv.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if stamp.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
        for command in ([sys.executable, "-m", "venv", str(venv)], ["bash", "-c", INSTALL]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                raise LocalStackSetupError(f"{' '.join(command)} failed (exit {done.returncode}):\n{output}")
        stamp.write_text(INSTALL + "\n")
    return python


class LocalStackServer:
    """`python -m localstack.runtime.main` with only S3, on a free loopback port; stopped with the fixture."""

    def __init__(self, python: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = Path(tempfile.mkdtemp(prefix="clip-assets-localstack-"))
        self.log = (self.state / "server.log").open("w+b")
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "GATEWAY_SERVER": "hypercorn",
            "SERVICES": "s3",
            "LOCALSTACK_VOLUME_DIR": str(self.state / "volume"),
            "DNS_ADDRESS": "0",  # no DNS server: nothing resolves through it here
            "DISABLE_EVENTS": "1",
        }
        self.process = subprocess.Popen(
            [str(python), "-m", "localstack.runtime.main"],
            cwd=self.state,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._ready, STARTUP_TIMEOUT_S, "LocalStack's S3 to be ready", interval_s=0.5, retry_on=(OSError,))
        except BaseException as failure:
            self.stop()
            raise LocalStackSetupError(f"LocalStack did not start: {failure}\n{self.log_tail()}") from failure

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise LocalStackSetupError(f"LocalStack exited with {self.process.returncode}:\n{self.log_tail()}")
        with urllib.request.urlopen(f"{self.url}/_localstack/health", timeout=2) as answer:
            health = answer.read()
        return b'"s3": "running"' in health or b'"s3": "available"' in health

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join((self.state / "server.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.state, ignore_errors=True)
