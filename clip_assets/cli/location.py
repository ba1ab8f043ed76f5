"""The code location the commands work on, and its datasets, each read from its own defs.yaml.

Every command resolves its dataset here, as Dagster does: from the code location's defs folder (one
`CuratedDataset` YAML file per dataset), so a dataset's inbox, output, storage options, writer settings
and partitions are the ones the UI and the sensors use. A flag may override a root for the command's
own dataset; it is refused when it names another dataset's root, so no command crosses into another
dataset's files or partitions.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import Definitions, EnvVar, build_resources

from clip_assets.cli.errors import UsageProblem
from clip_assets.components import CuratedDataset
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import StorageResource, WriterSettingsResource
from clip_assets.storage import Storage, url_scheme

DEFAULT_MODULE = "clip_assets.definitions"


@dataclass(frozen=True)
class Location:
    """A code location's Definitions and the datasets its defs folder declares."""

    module: str
    definitions: Definitions
    datasets: tuple[CuratedDataset, ...]

    def select(self, name: str | None) -> Dataset:
        """`--dataset NAME`, or the one dataset there is, or the unprefixed one."""
        by_name = {dataset.names.dataset: dataset for dataset in self.datasets}
        listed = ", ".join(repr(key) if key else "'' (the default dataset)" for key in sorted(by_name))
        if name is None:
            if len(self.datasets) == 1:
                return Dataset(self, self.datasets[0])
            if "" in by_name:
                return Dataset(self, by_name[""])
            raise UsageProblem(f"{self.module} has {len(self.datasets)} datasets ({listed}): choose one with --dataset")
        chosen = by_name.get(name.strip("/"))
        if chosen is None:
            raise UsageProblem(f"no dataset {name!r} in {self.module}: its datasets are {listed}")
        return Dataset(self, chosen)


def load_location(module: str = DEFAULT_MODULE) -> Location:
    """The module's `defs` and the `CuratedDataset` components of its defs folder."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise UsageProblem(f"cannot import the code location {module!r}: {exc}") from None
    definitions = getattr(loaded, "defs", None)
    if not isinstance(definitions, Definitions):
        raise UsageProblem(f"{module} has no `defs` (a dagster Definitions) to read datasets from")
    tree = definitions.component_tree
    if tree is None:
        raise UsageProblem(
            f"{module}'s Definitions were not loaded from a defs folder: clip-assets finds datasets through "
            "their defs.yaml files (dagster.components.load_from_defs_folder)"
        )
    datasets = tuple(tree.get_all_components(CuratedDataset))
    if not datasets:
        raise UsageProblem(
            f"{module} declares no dataset: add a defs.yaml of type clip_assets.components.CuratedDataset"
        )
    return Location(module, definitions, datasets)


def _value(setting: Any) -> Any:
    return setting.get_value() if isinstance(setting, EnvVar) else setting


def root_identity(url: str) -> str:
    """A root as comparable text: a local folder's absolute path, a store's URL without a trailing '/'."""
    if url_scheme(url) == "file":
        return Path(url.removeprefix("file://")).expanduser().resolve().as_posix()
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.strip('/')}"


def _overlaps(first: str, second: str) -> bool:
    a, b = root_identity(first), root_identity(second)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@dataclass(frozen=True)
class Dataset:
    """One dataset, as a command uses it: its names, its roots and its settings, overrides checked."""

    location: Location
    component: CuratedDataset

    @property
    def names(self) -> DatasetNames:
        return self.component.names

    @property
    def label(self) -> str:
        return self.names.label

    @property
    def flag(self) -> str:
        """How to name this dataset on a command line, for hints."""
        return f" --dataset {self.names.dataset}" if self.names.dataset else ""

    @property
    def partitions_per_run(self) -> int:
        return self.component.resolved_partitions_per_run

    def _resource(self, key: str) -> Any:
        return (self.location.definitions.resources or {})[key]

    def root(self, role: str) -> str:
        """The configured inbox or output URL (`role` names the resource), variables resolved."""
        resource: StorageResource = self._resource(getattr(self.names, role))
        return str(_value(resource.url))

    def _check_override(self, role: str, url: str) -> None:
        for other in self.location.datasets:
            if other is self.component:
                continue
            theirs = Dataset(self.location, other)
            for their_role in ("inbox", "output"):
                if _overlaps(url, theirs.root(their_role)):
                    raise UsageProblem(
                        f"--{role} {url} is the {their_role} of {theirs.label}, not of {self.label}: "
                        f"use{theirs.flag or ' no --dataset'} for it"
                    )

    @contextmanager
    def storage(self, role: str, override: str | None = None) -> Iterator[Storage]:
        """The dataset's inbox or output (`role`), or `override` in its place, reached with the dataset's
        storage options and connection."""
        resource: StorageResource = self._resource(getattr(self.names, role))
        if override is not None:
            self._check_override(role, override)
            resource = StorageResource(url=override, storage_options=resource.storage_options, s3=resource.s3)
        with build_resources({role: resource}) as built:
            yield getattr(built, role).get_storage()

    @contextmanager
    def writer_settings(self) -> Iterator[WriterSettingsResource]:
        with build_resources({"writer_settings": self._resource(self.names.writer_settings)}) as built:
            yield built.writer_settings
