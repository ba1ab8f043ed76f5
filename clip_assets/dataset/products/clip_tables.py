"""`clip_index` and `clip_vectors`: one row per clip of the whole dataset, and each embedding model's vectors.

One build makes both (partitioned like the families, downstream of them) because both come from one read
of a partition's outputs: each run replaces exactly its partitions' rows and drops the rows of videos
that are no longer partitions (`clip_assets.dataset.update`).
"""

from __future__ import annotations

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.products.base import (
    OUTPUT_FAMILIES,
    Built,
    Checked,
    DerivedProduct,
    ProductCheck,
    ProductOutput,
    ProductRun,
)
from clip_assets.dataset.tables import (
    VECTOR_COLUMNS,
    load_embedding_models,
    table_location,
    vector_counts,
    verify_vectors,
)
from clip_assets.dataset.update import commit_partitions, read_partitions, read_partitions_on_ray, verify_index
from clip_assets.metadata import Location, Metadata
from clip_assets.storage import Storage

CLIP_INDEX = "clip_index"
CLIP_VECTORS = "clip_vectors"
_LISTED = 20


def _columns(names: tuple[str, ...] | None = None) -> tuple[tuple[str, str], ...]:
    """The index's columns (or some of them); a vector's size is its model's."""
    return tuple((f.name, str(f.type)) for f in ci.clip_index_schema() if names is None or f.name in names)


def build(run: ProductRun) -> Built:
    storage = run.storage
    keys = run.partition_keys
    if run.parallel_backend == "ray":
        outputs = read_partitions_on_ray(run.spec, keys, run.ray_cpus_per_partition)
    else:
        outputs = read_partitions(storage, keys, run.families)
    update = commit_partitions(storage, outputs, run.live_partitions(), configured=run.model)
    if update.removed:
        run.log.info(f"removed the rows of {len(update.removed)} partitions: {list(update.removed)[:5]}")
    models = load_embedding_models(storage)
    vectors = vector_counts(storage, models)
    common: Metadata = {
        "partitions_written": len(update.written),
        "clips_of_partitions_written": update.partition_rows,
        "partitions_removed": list(update.removed)[:_LISTED],
        "embedding_model": str(run.model),
        "embedding_models": [
            {**table.to_json(), "vectors": count} for table, count in zip(models.tables, vectors, strict=True)
        ],
    }
    metadata = {}
    for name, table, key, rows in (
        (CLIP_INDEX, update.index, layout.clip_index_key(), update.index.rows),
        (CLIP_VECTORS, update.vectors, layout.CLIP_VECTORS, sum(vectors)),
    ):
        metadata[name] = {
            **common,
            "dagster/row_count": rows,
            "dagster/uri": Location(layout.full_location(storage.root, key)),
            "rows_inserted": table.inserted,
            "rows_updated": table.updated,
            "rows_deleted": table.deleted,
            "fragments": table.fragments,
            "lance_version": table.version,
            "compacted": table.compacted,
        }
    metadata[CLIP_VECTORS] = {
        **metadata[CLIP_VECTORS],
        "vector_index": update.vector_index,
        "models_updated": [{**m.table.to_json(), "rows": m.update.rows} for m in update.models],
    }
    return Built(metadata)


def matches_outputs(run: ProductRun) -> Checked:
    partitions = sorted(run.live_partitions())
    rows, problems = verify_index(run.storage, partitions)
    return Checked(
        passed=not problems,
        description="; ".join(problems[:3]) or f"{rows} rows match {len(partitions)} partitions' outputs",
        metadata={"rows": rows, "partitions": len(partitions), "problems": problems[:_LISTED]},
    )


def matches_index(run: ProductRun) -> Checked:
    check = verify_vectors(run.storage)
    return Checked(
        passed=check.passed,
        description=f"{check.vectors} vectors match the index"
        if check.passed
        else f"{len(check.missing)} missing, {len(check.extra)} not in the index, {len(check.differing)} differ",
        metadata={
            "vectors": check.vectors,
            "missing": check.missing[:_LISTED],
            "not_in_index": check.extra[:_LISTED],
            "differing": check.differing[:_LISTED],
        },
    )


def figures(storage: Storage) -> Metadata:
    """Row counts are Lance metadata: nothing is scanned."""
    index = table_location(storage, layout.clip_index_key()).open()
    models = load_embedding_models(storage)
    vectors = vector_counts(storage, models)
    return {
        "clip_index_rows": index.count_rows() if index is not None else 0,
        "clip_index_passed": index.count_rows(filter=ci.PASSED) if index is not None else 0,
        "clip_vectors": sum(vectors),
        "vectors_by_model": {str(table.model): count for table, count in zip(models.tables, vectors, strict=True)},
    }


PRODUCT = DerivedProduct(
    name="clip_tables",
    outputs=(
        ProductOutput(
            CLIP_INDEX,
            "One row per clip of the whole dataset (Lance, dataset/clip_index.lance): span, passed or filtered, "
            "scores, captions by model, probe facts, file URIs, MP4 bytes and sha256, the embedding and its model.",
            frozenset({"lance"}),
            _columns(),
        ),
        ProductOutput(
            CLIP_VECTORS,
            "The passed clips' embeddings, a Lance table per embedding model "
            "(dataset/clip_vectors/<model>[.<version>].lance) with a cosine IVF index once there are enough of "
            "them, for nearest-neighbour search over the whole dataset; a model's vectors stay when the dataset "
            "moves to another model.",
            frozenset({"lance"}),
            _columns(VECTOR_COLUMNS),
        ),
    ),
    build=build,
    depends_on=(OUTPUT_FAMILIES,),
    per_partition=True,
    checks=(
        ProductCheck(
            "matches_outputs",
            CLIP_INDEX,
            "Every partition's clip metadata documents (per its manifest) are exactly its rows in the index, and "
            "the index holds no row of a partition that is gone.",
            matches_outputs,
        ),
        ProductCheck(
            "matches_index",
            CLIP_VECTORS,
            "Each passed clip's vector is in its model's vector table with the same values, and every vector "
            "table row is of a passed clip of the index.",
            matches_index,
        ),
    ),
    figures=figures,
)
