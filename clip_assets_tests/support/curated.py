"""Curated-dataset content for the shard and gallery tests: processed videos whose clips have captions and
scores of their own, materialized into an output root, and the clip index rows those outputs make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from clip_assets.components.resources import S3ConnectionResource, WriterSettingsResource
from clip_assets.contract import ClipRecord
from clip_assets.dataset import clip_index
from clip_assets.dataset.outputs import read_partition_outputs
from clip_assets.storage import Storage
from clip_assets_tests.support.dataset import (
    BY_ASSET,
    FAMILY_ASSETS,
    NAMES,
    build_resources,
    dataset_tables,
    materialize_dataset_tables,
    materialize_near_duplicates,
    materialize_partition,
    output_checks,
    processed_videos,
)
from clip_assets_tests.support.factories import make_clips, write_video

# Each video's clips: how many, and what they show (every clip's captions name it, with its number).
VIDEOS = {"a.mp4": 3, "b.mp4": 4, "c.mp4": 2, "d.mp4": 3}
TOPICS = {
    "a.mp4": "a cyclist crosses the street",
    "b.mp4": "a red bus waits at the harbour",
    "c.mp4": "two dogs run along the beach",
    "d.mp4": "a tram passes in the rain",
}
FILTERED = (1,)
EMBEDDING_DIM = 8
# A planted near-duplicate: this clip's embedding is the other's with a little noise.
TWIN = ("c.mp4", 0)
TWIN_OF = ("a.mp4", 0)


def embedding(name: str, number: int) -> np.ndarray:
    """A clip's own direction (the factory's embeddings all point the same way), or its twin's, nudged."""
    if (name, number) == TWIN:
        return embedding(*TWIN_OF) + np.float32(0.001)
    seed = sorted(VIDEOS).index(name) * 100 + number
    return np.random.default_rng(seed).standard_normal(EMBEDDING_DIM).astype(np.float32)


def curated_clips(name: str) -> list[ClipRecord]:
    """`make_clips` of the video, with its topic in every passed clip's captions, a score and an embedding
    of its own per clip (and one planted near-duplicate, `TWIN`)."""
    clips = make_clips(VIDEOS[name], source_video=f"/videos/{name}", filtered=FILTERED, dim=EMBEDDING_DIM)
    offset = sorted(VIDEOS).index(name)
    for number, clip in enumerate(clips):
        if clip.filtered:
            continue
        clip.embeddings = {"cosmos-embed1": embedding(name, number)}
        clip.aesthetic_score = round(3.0 + 0.5 * number + 0.25 * offset, 2)
        clip.windows[0].captions = {"qwen": f"{TOPICS[name]}, take {number}"}
        clip.windows[0].enhanced_captions = {"qwen_lm": f"In this take {number}, {TOPICS[name]} slowly."}
        clip.windows[1].captions = {"qwen": f"{TOPICS[name]}, take {number}, later"}
    return clips


def write_videos(
    instance: DagsterInstance, inbox: Path, output: str, names: list[str], s3: S3ConnectionResource | None = None
) -> None:
    """Write each video into the inbox and materialize its output families into `output`."""
    for name in names:
        write_video(inbox / f"{name}.parquet", curated_clips(name), source_video=f"/videos/{name}")
        result = materialize_partition(instance, name, str(inbox), output, s3=s3)
        assert result.success, name


def index_rows(storage: Storage, partitions: list[str]) -> pa.Table:
    """The clip index rows of `partitions`, as the clip index builds them from what was written."""
    tables = []
    for key in sorted(partitions):
        outputs = read_partition_outputs(storage, key)
        assert outputs is not None, key
        tables.append(clip_index.clip_rows(outputs))
    return pa.concat_tables(tables)


def passed_ids(rows: pa.Table) -> set[str]:
    return {
        row[clip_index.CLIP_ID]
        for row in rows.select([clip_index.CLIP_ID, clip_index.PASSED]).to_pylist()
        if row[clip_index.PASSED]
    }


def curate(
    instance: DagsterInstance, inbox: Path, output: str, names: list[str], s3: S3ConnectionResource | None = None
) -> None:
    """`write_videos`, then each video's rows in the clip index and vector table (their asset, as a run would)."""
    write_videos(instance, inbox, output, names, s3)
    for name in names:
        result = materialize_dataset_tables(instance, name, str(inbox), output, s3=s3)
        assert result.success, name


def materialize_exports(
    instance: DagsterInstance,
    inbox: Path,
    output: str,
    *,
    shard_bytes: int,
    page_size: int,
    s3: S3ConnectionResource | None = None,
    **settings: object,
) -> ExecuteInProcessResult:
    """The near-duplicates, then the training shards and the gallery with their checks (as automation runs them);
    `settings` are the writer settings (the configured embedding model)."""
    assert materialize_near_duplicates(instance, str(inbox), output, s3=s3, **settings).success
    exports = [BY_ASSET["training_shards"], BY_ASSET["clip_gallery"]]
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *FAMILY_ASSETS, dataset_tables, BY_ASSET["near_duplicates"], *exports, *output_checks],
        selection=exports,
        instance=instance,
        resources=build_resources(str(inbox), output, writer_settings, s3),
        run_config={
            "ops": {
                NAMES.name("training_shards"): {"config": {"shard_bytes": shard_bytes}},
                NAMES.name("clip_gallery"): {"config": {"page_size": page_size}},
            }
        },
        raise_on_error=False,
    )
