"""Dataset-level roll-up over every partition: clips, hours, bytes per family, coverage, and a plot."""

import base64
import io
import json

from dagster import AssetExecutionContext, AssetIn, AutomationCondition, MaterializeResult, MetadataValue, asset

from clip_assets import layout
from clip_assets.assets.families import OUTPUT_FAMILIES
from clip_assets.dataset_stats import DatasetStats
from clip_assets.manifest import PartitionManifest
from clip_assets.resources import StorageResource

# Per family: partition key -> that partition's manifest, None where it was never materialized.
Manifests = dict[str, PartitionManifest | None]


def _plot_markdown(stats: DatasetStats) -> str:
    # Imported here: matplotlib costs a noticeable import time, and only this asset draws.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (by_family, by_video) = plt.subplots(1, 2, figsize=(10, 3.6))
    families = sorted(stats.bytes_by_family)
    by_family.barh(families, [stats.bytes_by_family[f] / 1e6 for f in families], color="#4f46e5")
    by_family.set_xlabel("MB written")
    by_family.set_title("Bytes per output family")
    clip_counts = sorted(stats.clips_by_video.values(), reverse=True)
    by_video.bar(range(len(clip_counts)), clip_counts, color="#0d9488")
    by_video.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_video.set_xlabel("videos, most clips first")
    by_video.set_ylabel("passed clips")
    by_video.set_title(f"{stats.clips_passed} passed clips in {stats.videos} videos")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return f"![dataset summary](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


@asset(
    ins={family.key.to_python_identifier(): AssetIn(family.key) for family in OUTPUT_FAMILIES},
    kinds={"json"},
    group_name="dataset",
    automation_condition=AutomationCondition.eager(),
    description="Roll-up of every processed video's outputs: clips, hours, bytes per family, caption and "
    "embedding coverage, with a plot. Written to _clip_assets/dataset_summary.json.",
)
def dataset_summary(
    context: AssetExecutionContext,
    output: StorageResource,
    clip_files: Manifests,
    clip_previews: Manifests,
    clip_embeddings: Manifests,
    clip_metadata: Manifests,
    video_summaries: Manifests,
) -> MaterializeResult:
    """Inputs are every partition's manifest per family (the IO manager loads them), not the files."""
    storage = output.get_storage()
    stats = DatasetStats()
    families = {
        "clip_files": clip_files,
        "clip_previews": clip_previews,
        "clip_embeddings": clip_embeddings,
        "clip_metadata": clip_metadata,
        "video_summaries": video_summaries,
    }
    missing = 0
    for partition_key, summary in sorted(video_summaries.items()):
        if summary is None:
            missing += 1
            continue
        chunk_keys = sorted(k for k in summary.entries if k.startswith("processed_clip_chunks/"))
        stats.add_video(partition_key, [json.loads(storage.read(k)) for k in chunk_keys])
        for name, manifests in families.items():
            manifest = manifests.get(partition_key)
            if manifest is not None:
                stats.add_family(name, len(manifest.entries), manifest.total_bytes)
    document = stats.to_json()
    storage.put(layout.dataset_summary_key(), json.dumps(document, indent=2).encode())
    if missing:
        context.log.warning(f"{missing} of {len(video_summaries)} partitions have no outputs yet")
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
            "bytes_by_family": MetadataValue.json(document["bytes_by_family"]),
            "summary_file": MetadataValue.path(f"{storage.root}/{layout.dataset_summary_key()}"),
            "plot": MetadataValue.md(_plot_markdown(stats)) if stats.videos else MetadataValue.text("no outputs yet"),
        }
    )
