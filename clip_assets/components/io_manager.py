"""The output families' IO manager: the one place that turns (family, partition) into what is downstream reads.

Writing stays one pass over each partition's input, in the engine (every family's files, then each
family's manifest, under the partition's lock): the families' step hands this IO manager each family's
written results, by partition, and `handle_output` takes them as recorded only where the layout says
the manifest is, so that anything downstream finds exactly what was written. `load_input` gives any
downstream asset, the derived products and a user's own alike, a `FamilyPartition` of each partition
it asks for: the manifest, keys and URLs, and lazy readers of the documents and the embeddings, with no
knowledge of the tree's layout. One partition gives one view; a range or an unpartitioned reader gets
them by partition key (lazy: nothing is read until asked, so a roll-up over 100,000 partitions costs
nothing here).
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import ConfigurableIOManager, InputContext, OutputContext

from clip_assets import layout
from clip_assets.components.resources import StorageResource
from clip_assets.dataset.family_outputs import FamilyPartition
from clip_assets.engine.writer import WriteResult


class FamilyManifestError(RuntimeError):
    """A family's written result that is not where the layout puts it: nothing downstream would find it."""


class FamilyOutputsIOManager(ConfigurableIOManager):
    """Each output family's partitions as `FamilyPartition` views of the dataset's output root."""

    output: StorageResource

    def handle_output(self, context: OutputContext, obj: Mapping[str, WriteResult]) -> None:
        family = context.asset_key.path[-1]
        for partition, result in obj.items():
            expected = layout.manifest_key(family, partition)
            if result.manifest_key != expected:
                raise FamilyManifestError(
                    f"{family} of {partition!r}: manifest recorded at {result.manifest_key}, the layout has {expected}"
                )
        context.log.debug(f"{family}: {len(obj)} partitions recorded")

    def load_input(self, context: InputContext) -> FamilyPartition | dict[str, FamilyPartition]:
        family = context.asset_key.path[-1]
        storage = self.output.get_storage()
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        views = {key: FamilyPartition(family, key, storage) for key in keys}
        return views[keys[0]] if len(keys) == 1 and context.has_partition_key else views
