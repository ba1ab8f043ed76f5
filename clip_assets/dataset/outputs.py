"""One partition's outputs as the clip index reads them: every family's view (`FamilyPartition`), read.

Never the inbox: the derived tables describe what was written. Each family's manifest names its keys
(and the MP4s' bytes and sha256); the documents and the embedding Parquet files are read a few at a
time, since on an object store each is a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from clip_assets import layout
from clip_assets.dataset.clip_index import EmbeddingModel, PartitionOutputs
from clip_assets.dataset.family_outputs import FamilyPartition, family_partitions
from clip_assets.families import clip_embeddings, clip_files, clip_metadata, clip_previews, video_summaries
from clip_assets.storage import Storage


def partition_outputs(views: Mapping[str, FamilyPartition]) -> PartitionOutputs | None:
    """The partition's recorded outputs, or None where its clip metadata was never written (or was removed)."""
    metadata = views[clip_metadata.FAMILY.name]
    if not metadata.written:
        return None
    files, previews = views[clip_files.FAMILY.name], views[clip_previews.FAMILY.name]
    embeddings, summaries = views[clip_embeddings.FAMILY.name], views[video_summaries.FAMILY.name]
    vectors: dict[str, tuple[np.ndarray, str]] = {}
    models: dict[str, EmbeddingModel] = {}
    for key, found, model in embeddings.vectors():
        vectors.update(found)
        models[key] = model
    return PartitionOutputs(
        partition_key=metadata.partition_key,
        root=metadata.storage.root,
        documents=dict(metadata.documents(layout.CLIP_METADATA)),
        mp4s={k: e for k, e in files.entries.items() if k.endswith(".mp4")},
        previews=[k for k in previews.keys if k.startswith(layout.PREVIEWS)],
        pickles=frozenset(k for k in embeddings.keys if k.endswith(".pickle")),
        vectors=vectors,
        models=models,
        chunks=[document for _, document in summaries.documents(layout.CHUNK_STATS)],
    )


def read_partition_outputs(storage: Storage, partition_key: str) -> PartitionOutputs | None:
    """`partition_outputs` of the partition's views under `storage`."""
    return partition_outputs(family_partitions(storage, partition_key))
