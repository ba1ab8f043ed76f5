"""The Dagster instance the commands record in: $DAGSTER_HOME, as Dagster's own commands find it, or the
project's own home under clip-assets-data/ when it is not set.

Like `dagster dev`, the commands first read a `.env` file in the working directory (its variables never
override the environment's), so the demo's `.env` points the CLI and plain `dagster dev` at the same
home and settings. Without DAGSTER_HOME, Dagster's commands would make a temporary instance that
forgets every run; the CLI records in `clip-assets-data/dagster_home` instead and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance
from dotenv import dotenv_values

from clip_assets.cli.errors import UsageProblem
from clip_assets.components.environment import DATA_DIR
from clip_assets.instance.storages import use_embedded_instance

HOME_VAR = "DAGSTER_HOME"
ENV_FILE = ".env"


def project_home(workdir: Path = Path(DATA_DIR)) -> Path:
    """The instance the demo and the CLI share when DAGSTER_HOME is not set."""
    return workdir / "dagster_home"


@contextmanager
def env_file_applied() -> Iterator[None]:
    """The working directory's `.env`, as Dagster's commands load it (set variables win), for one command.

    Its variables leave with the command: a program that calls the CLI in-process (a notebook, a test)
    keeps its own environment, and a later command run elsewhere does not inherit the demo's settings."""
    env_file = Path.cwd() / ENV_FILE
    added = {
        name: value
        for name, value in (dotenv_values(env_file).items() if env_file.is_file() else ())
        if value is not None and name not in os.environ
    }
    os.environ.update(added)
    try:
        yield
    finally:
        for name, value in added.items():
            if os.environ.get(name) == value:
                del os.environ[name]


@contextmanager
def dagster_instance(note: Callable[[str], None]) -> Iterator[DagsterInstance]:
    """$DAGSTER_HOME's instance, or the project's own home (made on first use), named by `note`."""
    home = os.environ.get(HOME_VAR)
    if home:
        path = Path(home)
        if not path.is_dir():
            raise UsageProblem(
                f"{HOME_VAR}={home} is not a folder: create it, or unset {HOME_VAR} to record in "
                f"{project_home()} as the demo does"
            )
        with DagsterInstance.get() as instance:
            yield instance
        return
    default = project_home()
    note(f"{HOME_VAR} is not set: recording in {default} (set {HOME_VAR} to use another Dagster home)")
    with use_embedded_instance(default.resolve()) as instance:
        yield instance
