"""The names one curated dataset's Dagster objects take, all derived from its key prefix.

A code location can hold several curated datasets (another inbox, another output root): each gets
its own asset keys, partitions, jobs, sensors and resource keys, so none collides with another's. The
default dataset has no prefix and keeps the plain names (`clip_files`, `processed_videos`,
`curate_videos`, resource `output`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetKey

OUTPUT_GROUP = "clip_outputs"
INBOX_GROUP = "inbox"
DATASET_GROUP = "dataset"
# Every write step takes a slot of this pool, so a deployment can bound simultaneous writers to its
# output storage (`dagster instance concurrency set clip_assets_writes N`); shared by all datasets.
WRITE_POOL = "clip_assets_writes"


@dataclass(frozen=True)
class DatasetNames:
    """`prefix` (e.g. `("cars",)`) goes in front of every asset key and, joined by `_`, every other name."""

    prefix: tuple[str, ...] = ()

    @property
    def dataset(self) -> str:
        """The dataset's name, as `clip-assets --dataset` takes it: its key prefix joined by '/' ('' unprefixed)."""
        return "/".join(self.prefix)

    @property
    def label(self) -> str:
        """How messages name the dataset."""
        return f"dataset {self.dataset!r}" if self.prefix else "the default dataset (no key prefix)"

    def key(self, name: str) -> AssetKey:
        return AssetKey([*self.prefix, name])

    def name(self, base: str) -> str:
        """A job, sensor, op, partitions or resource name, unique to this dataset."""
        return "_".join([*self.prefix, base])

    def group(self, base: str) -> str:
        return self.name(base)

    @property
    def partitions(self) -> str:
        return self.name("processed_videos")

    @property
    def inbox(self) -> str:
        return self.name("inbox")

    @property
    def output(self) -> str:
        return self.name("output")

    @property
    def families_io(self) -> str:
        """The families' IO manager: what downstream assets read the families through."""
        return self.name("families_io_manager")

    @property
    def writer_settings(self) -> str:
        return self.name("writer_settings")

    @property
    def validation_limits(self) -> str:
        return self.name("validation_limits")
