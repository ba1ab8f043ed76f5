"""`dataset_summary`: the roll-up over every partition, the derived products' figures, and a plot.

Clips, hours, bytes per family, caption and embedding coverage, the failure records' reasons, and what
each derived product says of itself (`DerivedProduct.figures`), written to
`_clip_assets/dataset_summary.json` (only when it changed) and shown with a plot in the UI.
"""

from __future__ import annotations

import base64
import json

from clip_assets import layout
from clip_assets.dataset.products.base import OUTPUT_FAMILIES, Built, DerivedProduct, ProductOutput, ProductRun
from clip_assets.dataset.products.clip_gallery import CLIP_GALLERY
from clip_assets.dataset.products.clip_tables import CLIP_INDEX
from clip_assets.dataset.products.near_duplicates import NEAR_DUPLICATES
from clip_assets.dataset.products.training_shards import TRAINING_SHARDS
from clip_assets.dataset.summary import plot_png, summarize
from clip_assets.metadata import Location, Markdown, MetadataEntry
from clip_assets.storage import put_if_changed

DATASET_SUMMARY = "dataset_summary"


def build(run: ProductRun) -> Built:
    storage = run.storage
    partitions = run.live_partitions()
    tables: dict[str, MetadataEntry] = {}
    for product in run.products:
        if product.figures is not None:
            tables.update(product.figures(storage))
    stats, missing = summarize(storage, run.families, partitions, tables)
    document = json.dumps(stats.to_json(), indent=2).encode()
    key = layout.dataset_summary_key()
    put_if_changed(storage, key, document)
    if missing:
        run.log.warning(f"{missing} of {len(partitions)} partitions have no outputs yet")
    plot = base64.b64encode(plot_png(stats)).decode() if stats.videos else ""
    summary = stats.to_json()
    return Built(
        {
            DATASET_SUMMARY: {
                "videos": stats.videos,
                "videos_without_outputs": missing,
                "clips_passed": stats.clips_passed,
                "clips_filtered": stats.clips_filtered,
                "clip_hours": round(stats.clip_seconds / 3600, 4),
                "caption_coverage": round(stats.coverage(stats.clips_with_caption), 4),
                "embedding_coverage": round(stats.coverage(stats.clips_with_embeddings), 4),
                "preview_coverage": round(stats.coverage(stats.clips_with_webp), 4),
                "total_bytes": sum(stats.bytes_by_family.values()),
                **{name: value if value is not None else "not built yet" for name, value in tables.items()},
                "bytes_by_family": summary["bytes_by_family"],
                "failed_partitions": stats.failed_partitions,
                "top_failure_reasons": summary["top_failure_reasons"],
                "summary_file": Location(layout.full_location(storage.root, key)),
                "dagster/uri": Location(layout.full_location(storage.root, key)),
                "plot": Markdown(f"![dataset summary](data:image/png;base64,{plot})") if plot else "no outputs yet",
            }
        }
    )


PRODUCT = DerivedProduct(
    name=DATASET_SUMMARY,
    outputs=(
        ProductOutput(
            DATASET_SUMMARY,
            "Roll-up of every processed video's outputs: clips, hours, bytes per family, caption and embedding "
            "coverage, the derived tables' rows, the near-duplicates, the training shards and the gallery, with a "
            "plot. Written to _clip_assets/dataset_summary.json.",
            frozenset({"json"}),
        ),
    ),
    build=build,
    depends_on=(OUTPUT_FAMILIES, CLIP_INDEX, NEAR_DUPLICATES, TRAINING_SHARDS, CLIP_GALLERY),
)
