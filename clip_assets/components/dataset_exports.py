"""What the curated dataset hands on: WebDataset training shards for a training job, a gallery for a curator.

Thin: `clip_assets.dataset.shards` and `clip_assets.dataset.gallery` do the work. Both read the clip
index (and the shards the near-duplicate grouping), never the inbox, so a removed or changed video
leaves or changes them at their next materialization, which their eager automation starts.
"""

from collections.abc import Sequence

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
from clip_assets.dataset.gallery import PAGE_SIZE, verify_gallery, write_gallery
from clip_assets.dataset.read import read_near_duplicates
from clip_assets.dataset.shards import (
    DEFAULT_SHARD_BYTES,
    ShardsIndex,
    duplicates_not_kept,
    update_shards,
    verify_shards,
)
from clip_assets.dataset.tables import read_clip_index

_MAX_LISTED = 20


class TrainingShardsConfig(Config):
    shard_bytes: int = Field(
        default=DEFAULT_SHARD_BYTES,
        ge=1,
        description="Upper bound of a shard's tar bytes (a single clip bigger than this is a shard of its own). "
        "Part of the membership rule: changing it re-cuts every shard.",
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
        required_resource_keys={names.output},
        description="WebDataset tar shards (training_shards/*.tar) of the passed clips that are not a dropped "
        "near-duplicate: each sample the MP4, the clip's index row as JSON (captions, scores, span) and its "
        "embedding as .npy. Clips are in hash ranges of their video, so a change rebuilds only its own range; "
        "training_shards/index.json lists each shard's samples, bytes, sha256 and clip ids.",
    )
    def training_shards(context: AssetExecutionContext, config: TrainingShardsConfig) -> MaterializeResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        excluded = duplicates_not_kept(read_near_duplicates(storage))
        rows = read_clip_index(storage, filter=ci.PASSED)
        update = update_shards(storage, rows, excluded, shard_bytes=config.shard_bytes)
        index = update.index
        index_uri = layout.full_location(storage.root, layout.training_shards_index_key())
        return MaterializeResult(
            metadata={
                "shards": len(index.shards),
                "samples": index.samples,
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
        "from disk and served from a bucket; loads one page of clips at a time.",
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
    names; the gallery shows as many clips as the index has passed ones, and its pages exist."""

    @asset_check(
        asset=names.key(TRAINING_SHARDS),
        name="every_clip_once",
        required_resource_keys={names.output},
        description="Every passed clip of the index that is not a dropped near-duplicate is in exactly one shard, "
        "no other clip is, and every shard is there with the size (and, on S3, the sha256) its index names.",
    )
    def every_clip_once(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        excluded = duplicates_not_kept(read_near_duplicates(storage))
        problems = verify_shards(storage, read_clip_index(storage, filter=ci.PASSED), excluded)
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(problems[:3]) or "every passed, non-duplicate clip is in one shard",
            metadata={"problems": MetadataValue.json(problems[:_MAX_LISTED])},
        )

    @asset_check(
        asset=names.key(CLIP_GALLERY),
        name="shows_every_clip",
        required_resource_keys={names.output},
        description="The gallery counts as many clips as the index has passed clips, and its page files exist.",
    )
    def shows_every_clip(context: AssetCheckExecutionContext) -> AssetCheckResult:
        output: StorageResource = getattr(context.resources, names.output)
        storage = output.get_storage()
        problems = verify_gallery(storage, read_clip_index(storage, [ci.PASSED]))
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(problems[:3]) or "the gallery shows every passed clip",
            metadata={"problems": MetadataValue.json(problems[:_MAX_LISTED])},
        )

    return [every_clip_once, shows_every_clip]
