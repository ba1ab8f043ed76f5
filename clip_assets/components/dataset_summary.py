"""The dataset-level roll-up over every partition: clips, hours, bytes per family, coverage, and a plot."""

import base64
import json
from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from clip_assets import layout
from clip_assets.components.names import (
    CLIP_GALLERY,
    CLIP_INDEX,
    DATASET_GROUP,
    DATASET_SUMMARY,
    NEAR_DUPLICATES,
    TRAINING_SHARDS,
    DatasetNames,
)
from clip_assets.components.resources import StorageResource
from clip_assets.dataset.summary import plot_png, summarize
from clip_assets.families import OutputFamily


def dataset_summary_asset(
    names: DatasetNames, families: Sequence[OutputFamily], owners: Sequence[str]
) -> AssetsDefinition:
    @asset(
        key=names.key(DATASET_SUMMARY),
        deps=[
            *(names.key(family.name) for family in families),
            names.key(CLIP_INDEX),
            names.key(NEAR_DUPLICATES),
            names.key(TRAINING_SHARDS),
            names.key(CLIP_GALLERY),
        ],
        kinds={"json"},
        group_name=names.group(DATASET_GROUP),
        owners=list(owners),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={names.output},
        description="Roll-up of every processed video's outputs: clips, hours, bytes per family, caption and "
        "embedding coverage, the derived tables' rows and the training shards, with a plot. Written to "
        "_clip_assets/dataset_summary.json.",
    )
    def dataset_summary(context: AssetExecutionContext) -> MaterializeResult:
        """Reads every partition's manifests (what was written), not the inbox."""
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        partitions = context.instance.get_dynamic_partitions(names.partitions)
        stats, missing = summarize(storage, families, partitions)
        document = stats.to_json()
        storage.put(layout.dataset_summary_key(), json.dumps(document, indent=2).encode())
        if missing:
            context.log.warning(f"{missing} of {len(partitions)} partitions have no outputs yet")
        plot = base64.b64encode(plot_png(stats)).decode() if stats.videos else ""
        return MaterializeResult(
            metadata={
                "videos": stats.videos,
                "videos_without_outputs": missing,
                "clips_passed": stats.clips_passed,
                "clips_filtered": stats.clips_filtered,
                "clip_hours": MetadataValue.float(round(stats.clip_seconds / 3600, 4)),
                "caption_coverage": MetadataValue.float(round(stats.coverage(stats.clips_with_caption), 4)),
                "embedding_coverage": MetadataValue.float(round(stats.coverage(stats.clips_with_embeddings), 4)),
                "preview_coverage": MetadataValue.float(round(stats.coverage(stats.clips_with_webp), 4)),
                "total_bytes": MetadataValue.int(sum(stats.bytes_by_family.values())),
                "clip_index_rows": MetadataValue.int(stats.tables.index_rows),
                "clip_vectors": MetadataValue.int(stats.tables.vectors),
                "near_duplicate_groups": stats.tables.near_duplicate_groups
                if stats.tables.near_duplicate_groups is not None
                else MetadataValue.text("not grouped yet"),
                "duplicate_rate": MetadataValue.float(round(stats.tables.duplicate_rate, 6))
                if stats.tables.duplicate_rate is not None
                else MetadataValue.text("not grouped yet"),
                "training_shards": MetadataValue.int(stats.tables.shards),
                "training_shard_samples": MetadataValue.int(stats.tables.shard_samples),
                "training_shard_bytes": MetadataValue.int(stats.tables.shard_bytes),
                "training_clips_left_out": MetadataValue.int(stats.tables.shard_clips_left_out),
                "training_left_out": MetadataValue.json(stats.tables.shard_left_out),
                "gallery_clips_without_mp4": MetadataValue.int(stats.tables.gallery_clips_without_mp4)
                if stats.tables.gallery_clips_without_mp4 is not None
                else MetadataValue.text("no gallery yet"),
                "gallery_clips_without_preview": MetadataValue.int(stats.tables.gallery_clips_without_preview)
                if stats.tables.gallery_clips_without_preview is not None
                else MetadataValue.text("no gallery yet"),
                "vectors_by_model": MetadataValue.json(stats.tables.vectors_by_model),
                "bytes_by_family": MetadataValue.json(document["bytes_by_family"]),
                "failed_partitions": stats.failed_partitions,
                "top_failure_reasons": MetadataValue.json(document["top_failure_reasons"]),
                "summary_file": MetadataValue.path(layout.full_location(storage.root, layout.dataset_summary_key())),
                "dagster/uri": MetadataValue.path(layout.full_location(storage.root, layout.dataset_summary_key())),
                "plot": MetadataValue.md(f"![dataset summary](data:image/png;base64,{plot})")
                if plot
                else MetadataValue.text("no outputs yet"),
            }
        )

    return dataset_summary
