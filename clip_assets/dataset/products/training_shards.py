"""`training_shards`: WebDataset tar shards of the passed clips that are not a removed near-duplicate.

Each sample is the MP4, the clip's index row as JSON and its vector of the configured model as `.npy`;
clips are in hash ranges of their video, so a change rebuilds only its own range; a clip whose MP4 is
absent, missing or damaged is left out and listed, never stopping the rest (`clip_assets.dataset.shards`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import BaseModel, Field

from clip_assets import layout
from clip_assets.dataset.products.base import Built, Checked, DerivedProduct, ProductCheck, ProductOutput, ProductRun
from clip_assets.dataset.products.clip_tables import CLIP_INDEX
from clip_assets.dataset.products.near_duplicates import NEAR_DUPLICATES
from clip_assets.dataset.read import read_near_duplicates
from clip_assets.dataset.shards import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_SHARD_BYTES,
    LeftOut,
    ShardsIndex,
    duplicates_not_kept,
    load_shards_index,
    update_shards,
    verify_shards,
)
from clip_assets.dataset.tables import read_clip_index, table_location
from clip_assets.metadata import Location, Markdown, Metadata, MetadataEntry
from clip_assets.storage import Storage

if TYPE_CHECKING:
    import lance

TRAINING_SHARDS = "training_shards"
_LISTED = 20


class TrainingShardsSettings(BaseModel):
    shard_bytes: int = Field(
        default=DEFAULT_SHARD_BYTES,
        ge=1,
        description="Upper bound of a shard's tar bytes (a single clip bigger than this is a shard of its own). "
        "Part of the membership rule: changing it re-cuts every shard.",
    )
    batch_rows: int = Field(
        default=DEFAULT_BATCH_ROWS,
        ge=1,
        description="Clip index rows read at once: with 64 bytes a clip and the MP4s in flight, what bounds the "
        "memory of an update whatever the dataset's size.",
    )
    strict: bool = Field(
        default=False,
        description="Fail on a passed clip whose MP4 is absent, missing or damaged, instead of leaving it out of "
        "the shards (listed in the metadata and the index file; the check warns).",
    )


def _clip_index(storage: Storage) -> pa.Table | lance.LanceDataset:
    """The clip index as the shards read it: the Lance dataset (one version, read a batch at a time)."""
    table = table_location(storage, layout.clip_index_key()).open()
    return table if table is not None else read_clip_index(storage)


def _listed(clips: Sequence[LeftOut]) -> MetadataEntry:
    return [{"clip_id": c.clip_id, "reason": c.reason, "mp4_key": c.mp4_key} for c in clips[:_LISTED]]


def _left_out_line(left_out: Sequence[LeftOut]) -> str:
    first = left_out[0]
    return f"{len(left_out)} passed clips left out of the shards, e.g. {first.clip_id}: {first.explanation}"


def _shard_table(index: ShardsIndex) -> Markdown:
    listed = index.shards[:_LISTED]
    table = "| shard | samples | bytes | sha256 |\n|---|---:|---:|---|\n" + "\n".join(
        f"| `{entry.key}` | {entry.samples} | {entry.bytes} | `{entry.sha256[:16]}` |" for entry in listed
    )
    if len(index.shards) > len(listed):
        table += f"\n\n{len(index.shards) - len(listed)} more in the index file."
    return Markdown(table)


def build(run: ProductRun) -> Built:
    settings: TrainingShardsSettings = run.settings
    storage = run.storage
    excluded = duplicates_not_kept(read_near_duplicates(storage))
    update = update_shards(
        storage,
        _clip_index(storage),
        excluded,
        shard_bytes=settings.shard_bytes,
        model=run.model,
        strict=settings.strict,
        batch_rows=settings.batch_rows,
    )
    index = update.index
    left_out = index.left_out
    if left_out:
        run.log.warning(_left_out_line(left_out))
    return Built(
        {
            TRAINING_SHARDS: {
                "shards": len(index.shards),
                "samples": index.samples,
                "embedding_model": str(index.model) if index.model else "no vectors",
                "clips_left_out": len(left_out),
                "left_out": _listed(left_out),
                "bytes": index.total_bytes,
                "shard_bytes": settings.shard_bytes,
                "duplicates_left_out": len(excluded),
                "shards_written": len(update.written),
                "shards_rebuilt_identical": len(update.rebuilt_identical),
                "shards_kept": len(update.kept),
                "shards_removed": len(update.removed),
                "bytes_written": update.bytes_written,
                "written": update.written[:_LISTED],
                "removed": update.removed[:_LISTED],
                "shard_list": _shard_table(index),
                "dagster/row_count": index.samples,
                "dagster/uri": Location(layout.full_location(storage.root, layout.training_shards_index_key())),
            }
        }
    )


def every_clip_once(run: ProductRun) -> Checked:
    storage = run.storage
    excluded = duplicates_not_kept(read_near_duplicates(storage))
    problems = verify_shards(storage, _clip_index(storage), excluded, model=run.model)
    index = load_shards_index(storage)
    left_out = index.left_out if index is not None else []
    if problems:
        description = "; ".join(problems[:3])
    elif left_out:
        description = _left_out_line(left_out)
    else:
        description = "every passed, non-duplicate clip is in one shard"
    return Checked(
        passed=not problems and not left_out,
        severity="error" if problems else "warn",
        description=description,
        metadata={"problems": problems[:_LISTED], "clips_left_out": len(left_out), "left_out": _listed(left_out)},
    )


def figures(storage: Storage) -> Metadata:
    shards = load_shards_index(storage)
    left_out = shards.left_out if shards is not None else []
    return {
        "training_shards": len(shards.shards) if shards is not None else 0,
        "training_shard_samples": shards.samples if shards is not None else 0,
        "training_shard_bytes": shards.total_bytes if shards is not None else 0,
        "training_clips_left_out": len(left_out),
        "training_left_out": _listed(left_out),
    }


PRODUCT = DerivedProduct(
    name=TRAINING_SHARDS,
    outputs=(
        ProductOutput(
            TRAINING_SHARDS,
            "WebDataset tar shards (training_shards/*.tar) of the passed clips that are not a removed "
            "near-duplicate: each sample the MP4, the clip's index row as JSON (captions, scores, span) and its "
            "vector of the configured embedding model as .npy. Clips are in hash ranges of their video, so a change "
            "rebuilds only its own range; training_shards/index.json lists each shard's samples, bytes, sha256 and "
            "clip ids. A clip whose MP4 is absent, missing or damaged is left out and listed, never stops the rest.",
            frozenset({"webdataset"}),
        ),
    ),
    build=build,
    depends_on=(CLIP_INDEX, NEAR_DUPLICATES),
    settings=TrainingShardsSettings,
    checks=(
        ProductCheck(
            "every_clip_once",
            TRAINING_SHARDS,
            "Every passed clip of the index that is not a removed near-duplicate is in exactly one shard, no other "
            "clip is, no shard is out of date with the index, and every shard is there with the size (and, on an "
            "object store, the sha256) its index names. Warns listing the clips left out (MP4 absent, missing or "
            "damaged).",
            every_clip_once,
        ),
    ),
    figures=figures,
)
