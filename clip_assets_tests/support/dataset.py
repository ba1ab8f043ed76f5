"""The default dataset's Dagster objects, and one partition materialized with them, for tests that bind
their own folders, endpoint and settings."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
from dagster import (
    AssetsDefinition,
    ConfigurableResource,
    DagsterInstance,
    EnvVar,
    ExecuteInProcessResult,
    build_sensor_context,
    materialize,
)

from clip_assets import layout
from clip_assets.components.dataset import dataset_definitions, dataset_resources
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import (
    S3ConnectionResource,
    StorageResource,
    ValidationLimitsResource,
    WriterSettingsResource,
)
from clip_assets.components.sensors import evaluate_inbox
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.clip_index import EmbeddingModel, PartitionOutputs
from clip_assets.dataset.tables import (
    EmbeddingModels,
    VectorTable,
    save_embedding_models,
    table_location,
    vector_schema,
)
from clip_assets.engine.manifest import ManifestEntry, PartitionManifest
from clip_assets.families import FAMILIES
from clip_assets.storage import Storage

NAMES = DatasetNames()
PARTITIONS_NAME = NAMES.partitions
PARTITIONS_PER_RUN = 25
DEFINITIONS = dataset_definitions(NAMES, {}, partitions_per_run=PARTITIONS_PER_RUN)
# Each of the dataset's asset definitions by the names of the assets it makes (a spec makes one).
BY_ASSET = {
    key.to_user_string(): definition
    for definition in DEFINITIONS.assets or ()
    for key in (definition.keys if isinstance(definition, AssetsDefinition) else [definition.key])  # type: ignore[union-attr]
}
processed_videos = BY_ASSET["processed_videos"]
family_outputs = BY_ASSET["clip_files"]
dataset_summary = BY_ASSET["dataset_summary"]
# clip_index and clip_vectors: one step.
dataset_tables = BY_ASSET["clip_index"]
near_duplicates = BY_ASSET["near_duplicates"]
FAMILY_ASSETS: list[AssetsDefinition] = [family_outputs]  # type: ignore[list-item]
output_checks = list(DEFINITIONS.asset_checks)
processed_video_sensor, dataset_summary_automation, verify_after_curate = DEFINITIONS.sensors
verify_outputs = next(job for job in DEFINITIONS.jobs or () if job.name == NAMES.name("verify_outputs"))


def build_resources(
    inbox: str | EnvVar,
    output: str | EnvVar,
    writer_settings: WriterSettingsResource,
    s3: S3ConnectionResource | None = None,
    validation_limits: ValidationLimitsResource | None = None,
) -> dict[str, ConfigurableResource]:
    """The default dataset's resources, on the test's own folders or endpoint."""
    return dataset_resources(NAMES, inbox, output, writer_settings, s3, validation_limits)


def materialize_partition(
    instance: DagsterInstance,
    partition_key: str,
    inbox: str,
    output: str,
    *,
    s3: S3ConnectionResource | None = None,
    assets: list | None = None,
    **settings: object,
) -> ExecuteInProcessResult:
    """Materialize output families of one partition (all of them, as `curate_videos` does, by default)."""
    known = instance.get_dynamic_partitions(PARTITIONS_NAME)
    if partition_key not in known:
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *(assets or FAMILY_ASSETS)],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, writer_settings, s3),
        raise_on_error=False,
    )


def sensor_tick(
    instance: DagsterInstance, inbox: str, s3: S3ConnectionResource | None = None, cursor: str | None = None
):
    """One tick of the default dataset's inbox sensor against `inbox` (what its `@sensor` function runs)."""
    storage = StorageResource(url=inbox, s3=s3).get_storage()
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        return evaluate_inbox(context, storage, NAMES, PARTITIONS_PER_RUN, [NAMES.key(f.name) for f in FAMILIES])


def materialization_metadata(result: ExecuteInProcessResult, asset_name: str) -> dict[str, object]:
    """The metadata values of a run's (first) materialization of `asset_name`."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset_name:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset_name}")


def materialize_dataset_tables(
    instance: DagsterInstance,
    partition_key: str,
    inbox: str,
    output: str,
    *,
    s3: S3ConnectionResource | None = None,
    **settings: object,
) -> ExecuteInProcessResult:
    """The clip index and vector tables (one step) of one partition, with their checks; `settings` are the
    writer settings (the configured embedding model)."""
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *FAMILY_ASSETS, dataset_tables, *output_checks],
        selection=[dataset_tables],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, writer_settings, s3),
        raise_on_error=False,
    )


def materialize_summary(instance: DagsterInstance, inbox: str, output: str) -> ExecuteInProcessResult:
    """The dataset summary over every partition's outputs, as they are."""
    return materialize(
        [*FAMILY_ASSETS, dataset_summary],
        selection=[dataset_summary],
        instance=instance,
        resources=build_resources(inbox, output, WriterSettingsResource()),
    )


def materialize_near_duplicates(
    instance: DagsterInstance,
    inbox: str,
    output: str,
    *,
    s3: S3ConnectionResource | None = None,
    **options: object,
) -> ExecuteInProcessResult:
    """The near-duplicates over the configured model's vector table, with its check; `options` are the asset's
    run config (`eps=...`, `rule="transitive"`, ...), or, by their names, writer settings (the model)."""
    settings = {name: value for name, value in options.items() if name in WriterSettingsResource.model_fields}
    config = {name: value for name, value in options.items() if name not in settings}
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *FAMILY_ASSETS, dataset_tables, near_duplicates, *output_checks],
        selection=[near_duplicates],
        instance=instance,
        resources=build_resources(inbox, output, writer_settings, s3),
        run_config={"ops": {NAMES.name("near_duplicates"): {"config": config}}},
        raise_on_error=False,
    )


def synthetic_outputs(
    root: str, partition_key: str, vectors: np.ndarray, first_clip: int = 0, filtered_every: int = 0
) -> PartitionOutputs:
    """What a partition's families would have written for `len(vectors)` clips, without the media: for
    the derived tables at sizes where writing real MP4s would dominate (benchmarks, the vector index)."""
    source_video = f"/videos/{partition_key}"
    documents: dict[str, dict[str, object]] = {}
    mp4s = {}
    found = {}
    parquet_key = layout.chunk_embedding_key("cosmos-embed1", source_video, 0)
    for row, vector in enumerate(vectors):
        clip_id = str(uuid.UUID(int=first_clip + row))
        filtered = bool(filtered_every) and row % filtered_every == filtered_every - 1
        mp4_key = layout.clip_key(clip_id, filtered=filtered)
        documents[layout.clip_metadata_key(clip_id)] = {
            "span_uuid": clip_id,
            "source_video": source_video,
            "duration_span": [row * 2.0, row * 2.0 + 2.0],
            "clip_location": layout.full_location(root, mp4_key),
            "windows": [] if filtered else [{"start_frame": 0, "end_frame": 48, "qwen_caption": f"clip {row}"}],
            "valid": not filtered,
        }
        mp4s[mp4_key] = ManifestEntry(hashlib.sha256(clip_id.encode()).hexdigest(), 100_000 + row)
        if not filtered:
            found[clip_id] = (vector, parquet_key)
    return PartitionOutputs(partition_key, root, documents, mp4s, vectors=found)


def stored_output_digest(output: Path, family: str, partition_key: str) -> str:
    """What a materialization's `manifest_sha256` must be, computed here from the stored files themselves:
    the sha256 of each file the partition's manifest lists, keyed by path in path order. Comparing with
    `PartitionManifest.digest` instead would check that code against itself."""
    listed = json.loads((output / layout.manifest_key(family, partition_key)).read_bytes())["artifacts"]
    hasher = hashlib.sha256()
    for key in sorted(listed):
        hasher.update(f"{key}\0{hashlib.sha256((output / key).read_bytes()).hexdigest()}\n".encode())
    return hasher.hexdigest()


def is_derived(key: str) -> bool:
    """Whether a key is one of the dataset-level outputs derived from the tree (not a family's file), or
    what the checks that read the tree keep (their open problems, their locks)."""
    derived_locks = {layout.dataset_lock_key(), layout.training_shards_lock_key()}
    derived_locks |= {layout.check_problems_lock_key(family.name) for family in FAMILIES}
    return (
        key == layout.dataset_summary_key()
        or key.startswith((layout.DATASET, layout.TRAINING_SHARDS, layout.GALLERY, layout.CHECKS))
        or key in derived_locks
    )


def unrecorded(storage: Storage) -> list[str]:
    """Keys of the output that no manifest records, outside clip-assets' own bookkeeping."""
    recorded = set()
    for info in storage.list(layout.MANIFESTS):
        recorded |= set(PartitionManifest.from_bytes(storage.read(info.key)).entries)
    return sorted(
        i.key for i in storage.list() if i.key not in recorded and not i.key.startswith(layout.INTERNAL_PREFIX)
    )


def write_vectors(storage, ids, vectors, partition="p.mp4", durations=None, mode="create") -> None:
    """A cosmos-embed1 vector table, listed as the dataset's model (and, with `durations`, the clip index's
    id and duration), as Lance writes them."""
    dim = vectors.shape[1]
    table = VectorTable(EmbeddingModel("cosmos-embed1", ""), dim)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    keys = pa.array([partition] * len(ids)) if isinstance(partition, str) else pa.array(partition)
    columns = {
        ci.CLIP_ID: pa.array(ids),
        ci.PARTITION_KEY: keys,
        ci.EMBEDDING_MODEL: pa.array([table.model.name] * len(ids)),
        ci.EMBEDDING_VERSION: pa.array([table.model.version] * len(ids)),
        ci.EMBEDDING: embedding,
    }
    table_location(storage, table.key).write(pa.table(columns, schema=vector_schema(dim)), mode)
    save_embedding_models(storage, EmbeddingModels((table,), table.model))
    if durations is not None:
        index = pa.table({ci.CLIP_ID: pa.array(ids), ci.DURATION: pa.array(durations, pa.float64())})
        table_location(storage, layout.clip_index_key()).write(index, mode)
