"""NeMo Curator 1.4.0 and clip-assets' hand-off in a virtualenv of their own, made by the README's command.

NeMo's declared dependencies pull torch and transformers, which its video writer never touches, so
the README tells NeMo Curator users to install the hand-off's extra and NeMo with `--no-deps`. The
tests run exactly that command (`INSTALL`, which the README must show verbatim) in a fresh virtualenv,
cached under ~/.cache/clip-assets keyed by the command, pyproject.toml and the Python version (so a
second checkout or CI's fresh clone on the same machine reuses it), and run the NeMo side
(`clip_assets_tests/support/nemo_side.py`) in subprocesses of it with this checkout first on PYTHONPATH: the
code under test is always the checkout's, the dependencies exactly what the command installed. If it
cannot be built, the tests that need it fail with the installer's output: they are never skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from clip_assets_tests.support.processes import end_session

REPO = Path(__file__).resolve().parents[2]
# Run in the checkout, with the new virtualenv first on PATH; the README shows the same line.
INSTALL = "pip install '.[nemo,azure,gcs]' && pip install --no-deps nemo-curator==1.4.0 cosmos-xenna==0.2.0"
CACHE = Path.home() / ".cache" / "clip-assets"
IMPORT_CHECK = "import clip_assets.nemo, nemo_curator.stages.video.io.clip_writer, nemo_curator.backends.ray_actor_pool"


FFPROBE_MISSING = "ffprobe not found: NeMo probes clips with it (Debian: apt-get install -y ffmpeg)"


class NemoSetupError(RuntimeError):
    """The NeMo virtualenv could not be built; the message holds the command and its output."""


def venv_key() -> str:
    text = "\n".join([INSTALL, sys.version, (REPO / "pyproject.toml").read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise NemoSetupError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def nemo_python() -> Path:
    """The interpreter of the cached virtualenv, built first if needed (about two minutes)."""
    if shutil.which("ffprobe") is None:
        raise NemoSetupError(FFPROBE_MISSING)
    venv = CACHE / f"nemo-{venv_key()}"
    python = venv / "bin" / "python"
    stamp = venv / "clip-assets-ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{venv.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if stamp.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        _run([sys.executable, "-m", "venv", str(venv)], env, "python -m venv")
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
        _run(["bash", "-c", INSTALL], env, INSTALL)
        _run([str(python), "-c", IMPORT_CHECK], {**env, **checkout_first()}, "importing NeMo and the hand-off")
        stamp.write_text(INSTALL + "\n")
    return python


def checkout_first() -> dict[str, str]:
    """The environment that makes the NeMo virtualenv import this checkout's clip_assets (and tests)."""
    return {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run_in_session(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`command` in a session of its own; whatever it leaves running there (Ray's workers outlive the
    executors NeMo starts) is ended when it returns."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        end_session(process.pid)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_nemo_side(python: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """One `nemo_side` command in the NeMo virtualenv; its JSON result, or an assertion with its output."""
    done = run_in_session(
        [str(python), "-m", "clip_assets_tests.support.nemo_side", *args],
        {**os.environ, **checkout_first(), **(env or {})},
        REPO,
        timeout,
    )
    assert done.returncode == 0, f"nemo_side {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
