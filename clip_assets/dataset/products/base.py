"""What a derived product is: one object holding everything the Dagster layer needs to make its asset and its
checks, as `OutputFamily` is for a family.

A product is built from what the families wrote (through their views, `FamilyPartition`) or from other
products, writes below the output root, and says what it did as metadata; its checks verify what it
wrote; it gives the dataset summary its figures. No Dagster here: the factory in
`clip_assets.components.products` turns each product into an asset (or a multi-asset for a product with
several outputs), its run config, its checks, and its place in the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from clip_assets.dataset.clip_index import EmbeddingModel
from clip_assets.dataset.family_outputs import FamilyPartition
from clip_assets.metadata import Metadata
from clip_assets.storage import Storage, StorageSpec

# What a product depends on besides other products: every output family of the dataset.
OUTPUT_FAMILIES = "families"


@dataclass(frozen=True)
class ProductOutput:
    """One asset a product makes: its name (the asset key's last part), what it is, its kinds, its columns."""

    name: str
    description: str
    kinds: frozenset[str]
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProductRun:
    """What a product's build and checks are given.

    `families` holds the families' views (by family, then partition) of the run's partitions (a
    partitioned product's) or of every partition (a product that reads the families once per run);
    `settings` is the product's settings model, validated, or None; `products` the dataset's every
    product (the summary asks each for its figures)."""

    storage: Storage
    spec: StorageSpec
    model: EmbeddingModel
    partition_keys: tuple[str, ...]
    live_partitions: Callable[[], Sequence[str]]
    families: Mapping[str, Mapping[str, FamilyPartition]]
    settings: Any
    log: logging.Logger
    # The run's answers to the product's `run_options` (actions such as a re-fit), by name.
    options: Mapping[str, Any] = field(default_factory=dict)
    products: Sequence[DerivedProduct] = ()
    parallel_backend: str = "threads"
    ray_cpus_per_partition: float = 0.5


@dataclass(frozen=True)
class Built:
    """What a build did: metadata per output (by its name)."""

    metadata: Mapping[str, Metadata]


@dataclass(frozen=True)
class Checked:
    """A check's outcome: `warn` fails it as a warning (something left out, shown, not broken)."""

    passed: bool
    description: str
    metadata: Metadata = field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"


@dataclass(frozen=True)
class ProductCheck:
    """A check of one of the product's outputs (`output`, by name)."""

    name: str
    output: str
    description: str
    run: Callable[[ProductRun], Checked]


@dataclass(frozen=True)
class DerivedProduct:
    """Everything about one derived product; `clip_assets.dataset.products.PRODUCTS` lists them all.

    - `outputs`: the assets it makes (most make one; the clip index and its vectors are one build);
    - `depends_on`: the outputs of other products it reads, and `OUTPUT_FAMILIES` when it reads the families
      (through their views, handed to it in `ProductRun.families`);
    - `per_partition`: partitioned like the families (a run builds its partitions), or one build of the
      whole dataset;
    - `settings`: a pydantic model of its settings (NeMo's names where NeMo has them): each dataset's
      defs.yaml attribute named after the product sets their defaults, a run's config each of them;
      `run_options`: what only a run can ask for (an action, not a setting);
    - `build`: writes and says what it did; `checks`: verify what it wrote;
    - `figures`: what it adds to the dataset summary (the summary's `dataset_tables`), from what it wrote.
    """

    name: str
    outputs: tuple[ProductOutput, ...]
    build: Callable[[ProductRun], Built]
    depends_on: tuple[str, ...] = ()
    per_partition: bool = False
    settings: type[BaseModel] | None = None
    run_options: type[BaseModel] | None = None
    checks: tuple[ProductCheck, ...] = ()
    figures: Callable[[Storage], Metadata] | None = None

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.outputs)
