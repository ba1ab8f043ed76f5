"""A dataset's jobs: write its outputs, verify them, index the written partitions, build the derived dataset."""

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import AssetSelection, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from clip_assets.components.names import OUTPUT_GROUP, DatasetNames
from clip_assets.dataset.products import DerivedProduct


def curate_job_name(names: DatasetNames) -> str:
    """The main job: every output family of one processed video, or of a range of them."""
    return names.name("curate_videos")


def verify_job_name(names: DatasetNames) -> str:
    """The families' `intact` checks, for a run's partition or range, or every partition."""
    return names.name("verify_outputs")


def index_job_name(names: DatasetNames) -> str:
    """The clip index and vectors of a partition or a range (partitioned like the families)."""
    return names.name("index_clips")


def build_job_name(names: DatasetNames) -> str:
    """The dataset as a whole, once partitions are indexed: near-duplicates, shards, gallery, summary."""
    return names.name("build_dataset")


@dataclass(frozen=True)
class DatasetJobs:
    """A dataset's jobs, for the sensors that request them and the Definitions that hold them."""

    curate: UnresolvedAssetJobDefinition
    verify: UnresolvedAssetJobDefinition
    index: UnresolvedAssetJobDefinition
    build: UnresolvedAssetJobDefinition

    @property
    def all(self) -> list[UnresolvedAssetJobDefinition]:
        return [self.curate, self.verify, self.index, self.build]


def dataset_jobs(names: DatasetNames, products: Sequence[DerivedProduct]) -> DatasetJobs:
    """The jobs of a dataset whose derived products are `products`: the partitioned ones are indexed per
    partition (`index`), the others built for the whole dataset (`build`)."""
    outputs = AssetSelection.groups(names.group(OUTPUT_GROUP))

    def outputs_of(per_partition: bool) -> AssetSelection:
        chosen = [p for p in products if p.per_partition == per_partition]
        return AssetSelection.assets(*(names.key(name) for p in chosen for name in p.output_names))

    return DatasetJobs(
        curate=define_asset_job(
            curate_job_name(names),
            selection=outputs.without_checks(),
            description="Write all NeMo-compatible outputs of processed videos (one partition, or a range).",
        ),
        verify=define_asset_job(
            verify_job_name(names),
            selection=outputs - outputs.without_checks(),
            description="Read every output of a partition back and check it against its manifest (the `intact` "
            "checks), and every partition an earlier check found damaged.",
        ),
        index=define_asset_job(
            index_job_name(names),
            selection=outputs_of(per_partition=True),
            description="Bring the clip index and vectors up to date with the written outputs of a partition or a "
            "range.",
        ),
        build=define_asset_job(
            build_job_name(names),
            selection=outputs_of(per_partition=False),
            description="Build what the dataset hands on from its index: near-duplicates, training shards, gallery, "
            "and the dataset summary, with their checks.",
        ),
    )
