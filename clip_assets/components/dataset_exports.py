"""What the curated dataset hands on: WebDataset training shards for a training job, a gallery for a curator.

Thin: `clip_assets.dataset.shards` and `clip_assets.dataset.gallery` do the work. Both read the clip
index (and the shards the near-duplicate grouping), never the inbox, so a removed or changed video
leaves or changes them at their next materialization, which their eager automation starts.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from clip_assets import layout
from clip_assets.components.dataset_tables import configured_model
from clip_assets.components.names import (
    CLIP_GALLERY,
    CLIP_INDEX,
    DATASET_GROUP,
    NEAR_DUPLICATES,
    TRAINING_SHARDS,
    DatasetNames,
)
from clip_assets.components.resources import StorageResource
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.gallery import COLUMNS as GALLERY_COLUMNS
from clip_assets.dataset.gallery import PAGE_SIZE, gallery_files, verify_gallery, write_gallery
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
from clip_assets.storage import Storage

if TYPE_CHECKING:
    import lance

_MAX_LISTED = 20


class TrainingShardsConfig(Config):
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


def _clip_index(storage: Storage) -> "pa.Table | lance.LanceDataset":
    """The clip index as the shards read it: the Lance dataset (one version, read a batch at a time)."""
    table = table_location(storage, layout.clip_index_key()).open()
    return table if table is not None else read_clip_index(storage)


def _listed(clips: Sequence[LeftOut]) -> MetadataValue:
    return MetadataValue.json(
        [{"clip_id": c.clip_id, "reason": c.reason, "mp4_key": c.mp4_key} for c in clips[:_MAX_LISTED]]
    )


class ClipGalleryConfig(Config):
    page_size: int = Field(default=PAGE_SIZE, ge=1, le=10_000, description="Clips per page file and per screen.")


def _shard_table(index: ShardsIndex) -> str:
    listed = index.shards[:_MAX_LISTED]
    table = "| shard | samples | bytes | sha256 |\n|---|---:|---:|---|\n" + "\n".join(
        f"| `{entry.key}` | {entry.samples} | {entry.bytes} | `{entry.sha256[:16]}` |" for entry in listed
    )
    if len(index.shards) > len(listed):
        table += f"\n\n{len(index.shards) - len(listed)} more in the index file."
    return table


def training_shards_asset(names: DatasetNames, owners: Sequence[str]) -> AssetsDefinition:
    @asset(
        key=names.key(TRAINING_SHARDS),
        deps=[names.key(CLIP_INDEX), names.key(NEAR_DUPLICATES)],
        kinds={"webdataset"},
        group_name=names.group(DATASET_GROUP),
        owners=list(owners),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={names.output, names.writer_settings},
        description="WebDataset tar shards (training_shards/*.tar) of the passed clips that are not a dropped "
        "near-duplicate: each sample the MP4, the clip's index row as JSON (captions, scores, span) and its "
        "vector of the configured embedding model as .npy. Clips are in hash ranges of their video, so a change "
        "rebuilds only its own range; training_shards/index.json lists each shard's samples, bytes, sha256 and "
        "clip ids. A clip whose MP4 is absent, missing or damaged is left out and listed, never stops the rest.",
    )
    def training_shards(context: AssetExecutionContext, config: TrainingShardsConfig) -> MaterializeResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        excluded = duplicates_not_kept(read_near_duplicates(storage))
        update = update_shards(
            storage,
            _clip_index(storage),
            excluded,
            shard_bytes=config.shard_bytes,
            model=configured_model(context, names),
            strict=config.strict,
            batch_rows=config.batch_rows,
        )
        index = update.index
        index_uri = layout.full_location(storage.root, layout.training_shards_index_key())
        left_out = index.left_out
        if left_out:
            context.log.warning(
                f"{len(left_out)} passed clips left out of the shards, e.g. {left_out[0].clip_id}: "
                f"{left_out[0].explanation}"
            )
        return MaterializeResult(
            metadata={
                "shards": len(index.shards),
                "samples": index.samples,
                "embedding_model": MetadataValue.text(str(index.model) if index.model else "no vectors"),
                "clips_left_out": len(left_out),
                "left_out": _listed(left_out),
                "bytes": MetadataValue.int(index.total_bytes),
                "shard_bytes": MetadataValue.int(config.shard_bytes),
                "duplicates_left_out": len(excluded),
                "shards_written": len(update.written),
                "shards_rebuilt_identical": len(update.rebuilt_identical),
                "shards_kept": len(update.kept),
                "shards_removed": len(update.removed),
                "bytes_written": MetadataValue.int(update.bytes_written),
                "written": MetadataValue.json(update.written[:_MAX_LISTED]),
                "removed": MetadataValue.json(update.removed[:_MAX_LISTED]),
                "shard_list": MetadataValue.md(_shard_table(index)),
                "dagster/row_count": MetadataValue.int(index.samples),
                "dagster/uri": MetadataValue.path(index_uri),
            }
        )

    return training_shards


def clip_gallery_asset(names: DatasetNames, owners: Sequence[str]) -> AssetsDefinition:
    @asset(
        key=names.key(CLIP_GALLERY),
        deps=[names.key(CLIP_INDEX)],
        kinds={"html"},
        group_name=names.group(DATASET_GROUP),
        owners=list(owners),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={names.output},
        description="A static HTML gallery (gallery/index.html) of every passed clip: animated preview, captions, "
        "scores, duration, links to its MP4 and metadata; filters by caption words, score and video. Works opened "
        "from disk and served from a bucket; loads one page of clips at a time. A clip without an MP4 or a preview "
        "is shown without it, counted and listed.",
    )
    def clip_gallery(context: AssetExecutionContext, config: ClipGalleryConfig) -> MaterializeResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        rows = read_clip_index(storage, list(GALLERY_COLUMNS), filter=ci.PASSED)  # no embeddings
        build = write_gallery(storage, rows, page_size=config.page_size)
        page_uri = layout.full_location(storage.root, layout.gallery_page_key())
        return MaterializeResult(
            metadata={
                "clips": build.clips,
                "videos": build.videos,
                "pages": build.pages,
                "clips_without_mp4": len(build.without_mp4),
                "clips_without_preview": len(build.without_preview),
                "without_mp4": MetadataValue.json(build.without_mp4[:_MAX_LISTED]),
                "without_preview": MetadataValue.json(build.without_preview[:_MAX_LISTED]),
                "files_written": len(build.written),
                "files_unchanged": build.unchanged,
                "pages_removed": len(build.removed),
                "bytes": MetadataValue.int(build.bytes_total),
                "dagster/uri": MetadataValue.path(page_uri),
            }
        )

    return clip_gallery


def dataset_export_checks(names: DatasetNames) -> list[AssetChecksDefinition]:
    """The shards hold every passed non-duplicate clip of the index once, in objects of the bytes the index
    names, none out of date; the gallery's files are what the index makes. Each fails (ERROR) on a
    problem, and warns (WARN) listing the clips it had to leave out or show without their files."""

    @asset_check(
        asset=names.key(TRAINING_SHARDS),
        name="every_clip_once",
        required_resource_keys={names.output, names.writer_settings},
        description="Every passed clip of the index that is not a dropped near-duplicate is in exactly one shard, "
        "no other clip is, no shard is out of date with the index, and every shard is there with the size (and, "
        "on S3, the sha256) its index names. Warns listing the clips left out (MP4 absent, missing or damaged).",
    )
    def every_clip_once(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        excluded = duplicates_not_kept(read_near_duplicates(storage))
        problems = verify_shards(storage, _clip_index(storage), excluded, model=configured_model(context, names))
        index = load_shards_index(storage)
        left_out = index.left_out if index is not None else []
        if problems:
            description = "; ".join(problems[:3])
        elif left_out:
            description = f"{len(left_out)} passed clips left out of the shards, e.g. {left_out[0].clip_id}: " + (
                left_out[0].explanation
            )
        else:
            description = "every passed, non-duplicate clip is in one shard"
        return AssetCheckResult(
            passed=not problems and not left_out,
            severity=AssetCheckSeverity.ERROR if problems else AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "problems": MetadataValue.json(problems[:_MAX_LISTED]),
                "clips_left_out": len(left_out),
                "left_out": _listed(left_out),
            },
        )

    @asset_check(
        asset=names.key(CLIP_GALLERY),
        name="shows_every_clip",
        required_resource_keys={names.output},
        description="The gallery's files are byte for byte what the index makes (every passed clip counted and "
        "shown, no page missing, changed or past the last). Warns listing the clips shown without an MP4 or a "
        "preview.",
    )
    def shows_every_clip(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        rows = read_clip_index(storage, list(GALLERY_COLUMNS), filter=ci.PASSED)
        problems = verify_gallery(storage, rows)
        content = gallery_files(rows)
        incomplete = sorted(set(content.without_mp4) | set(content.without_preview))
        if problems:
            description = "; ".join(problems[:3])
        elif incomplete:
            description = (
                f"{len(content.without_mp4)} clips shown without an MP4, {len(content.without_preview)} without a "
                "preview"
            )
        else:
            description = "the gallery shows every passed clip"
        return AssetCheckResult(
            passed=not problems and not incomplete,
            severity=AssetCheckSeverity.ERROR if problems else AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "problems": MetadataValue.json(problems[:_MAX_LISTED]),
                "without_mp4": MetadataValue.json(content.without_mp4[:_MAX_LISTED]),
                "without_preview": MetadataValue.json(content.without_preview[:_MAX_LISTED]),
            },
        )

    return [every_clip_once, shows_every_clip]
