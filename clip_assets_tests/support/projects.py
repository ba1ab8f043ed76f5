"""A code location of a team's own, as a user makes one: a dg project whose defs folder holds one
`CuratedDataset` defs.yaml per dataset, importable under a module name of its own, and the CLI run on it
in this process (`clip-assets -m <module> ...`)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from clip_assets.cli import main

PYPROJECT = """\
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{module}"
defs_module = "{module}.defs"
"""
DEFINITIONS = """\
from pathlib import Path

from dagster.components import load_from_defs_folder

defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@dataclass(frozen=True)
class Project:
    """The project's folder, its package name, and a Dagster home of its own for the CLI."""

    root: Path
    package: str
    home: Path

    @property
    def module(self) -> str:
        return f"{self.package}.definitions"

    def defs_yaml(self, folder: str) -> Path:
        return self.root / self.package / "defs" / folder / "defs.yaml"

    def cli(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        """`clip-assets -m <module> ARGS` in this process, recording in the project's own home."""
        environment: dict[str, str | None] = {"DAGSTER_HOME": str(self.home), **(env or {})}
        return CliRunner().invoke(main, ["-m", self.module, *args], env=environment, catch_exceptions=False)


@contextmanager
def project(tmp_path: Path, datasets: Mapping[str, Mapping[str, Any]]) -> Iterator[Project]:
    """A project whose defs folder holds `datasets` (folder name -> the component's attributes)."""
    package = f"team_project_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    (root / package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT.format(module=package))
    (root / package / "__init__.py").write_text("")
    (root / package / "definitions.py").write_text(DEFINITIONS)
    (root / package / "defs" / "__init__.py").write_text("")
    for folder, attributes in datasets.items():
        path = root / package / "defs" / folder / "defs.yaml"
        path.parent.mkdir(parents=True)
        document = {"type": "clip_assets.components.CuratedDataset", "attributes": dict(attributes)}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    home = tmp_path / "dagster_home"
    home.mkdir()
    sys.path.insert(0, str(root))
    try:
        yield Project(root, package, home)
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name == package or name.startswith(f"{package}.")]:
            del sys.modules[name]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` and its bytes: what "left byte for byte" is compared with."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def one_line_error(result: Result, *expected: str) -> str:
    """The command failed with exactly one line on stderr, no traceback, naming every `expected` text."""
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]
