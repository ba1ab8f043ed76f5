"""`near_duplicates`: near-duplicate passed clips across the whole dataset, by NeMo Curator's semantic dedup rule.

k-means clusters of the configured model's vectors; within each, clips ranked by `which_to_keep` and one
removed when an earlier-ranked clip is at cosine similarity >= 1 - eps (`clip_assets.dataset.near_duplicates`);
an update re-decides the clusters whose clips changed (`clip_assets.dataset.near_duplicates_update`).
"""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, Field

from clip_assets import layout
from clip_assets.dataset.near_duplicates import (
    CLUSTER_SIZE,
    DEFAULT_EPS,
    DEFAULT_MEMORY_MB,
    DEFAULT_PAIRWISE_BATCH_SIZE,
    DEFAULT_RANDOM_STATE,
    DEFAULT_RATE_JUMP,
    DedupSettings,
    Rule,
    WhichToKeep,
    rate_jumped,
)
from clip_assets.dataset.near_duplicates_update import read_near_duplicates_summary, update_near_duplicates
from clip_assets.dataset.products.base import Built, Checked, DerivedProduct, ProductCheck, ProductOutput, ProductRun
from clip_assets.dataset.products.clip_tables import CLIP_VECTORS
from clip_assets.metadata import Location, Metadata
from clip_assets.storage import Storage

NEAR_DUPLICATES = "near_duplicates"


class NearDuplicatesSettings(BaseModel):
    """A dataset's near-duplicate settings, NeMo's names: its defs.yaml `near_duplicates:` attribute, and the
    defaults of the asset's run config (which can set each one for a run)."""

    rule: Rule = Field(
        default="nemo",
        description="'nemo': NeMo Curator's ranked comparison (a clip goes when an earlier-ranked clip of its "
        "cluster is within eps); 'transitive': union-find groups of pairs within eps, the longest clip kept.",
    )
    eps: float = Field(
        default=DEFAULT_EPS, ge=0.0, lt=1.0, description="Near-duplicate at cosine similarity >= 1 - eps (NeMo's)."
    )
    which_to_keep: WhichToKeep = Field(
        default="hard",
        description="NeMo's ranking within a cluster: 'hard' keeps the clips farthest from the centroid, 'easy' "
        "the closest, 'random' a seeded shuffle.",
    )
    n_clusters: int | None = Field(
        default=None, ge=1, description=f"k-means clusters; unset: one per {CLUSTER_SIZE} clips, fixed at each fit."
    )
    random_state: int = Field(default=DEFAULT_RANDOM_STATE, description="Seeds k-means and 'random'.")
    pairwise_batch_size: int = Field(
        default=DEFAULT_PAIRWISE_BATCH_SIZE, ge=1, description="Clips compared per block (NeMo's)."
    )
    memory_mb: int = Field(
        default=DEFAULT_MEMORY_MB,
        ge=16,
        description="MiB of vectors, similarity blocks and k-means sample held at once.",
    )

    def dedup(self) -> DedupSettings:
        return DedupSettings(**{name: getattr(self, name) for name in NearDuplicatesSettings.model_fields})


class NearDuplicatesActions(BaseModel):
    """What a run may ask for, beyond the settings."""

    refit: bool = Field(default=False, description="Fit k-means anew (every cluster is re-decided).")
    accept_rate: bool = Field(
        default=False, description="Take this build's duplicate rate as the one duplicate_rate_steady accepts."
    )


def build(run: ProductRun) -> Built:
    settings: NearDuplicatesSettings = run.settings
    actions = NearDuplicatesActions(**run.options)
    update = update_near_duplicates(
        run.storage, settings.dedup(), model=run.model, refit=actions.refit, accept_rate=actions.accept_rate
    )
    grouping, found = update.grouping, update.build
    return Built(
        {
            NEAR_DUPLICATES: {
                "clips_compared": grouping.clips,
                "groups": grouping.group_count,
                "duplicates": grouping.duplicates,
                "duplicate_rate": round(grouping.duplicate_rate, 6),
                "previous_duplicate_rate": update.previous_rate
                if update.previous_rate is not None
                else "none (first build)",
                "baseline_duplicate_rate": update.baseline_rate
                if update.baseline_rate is not None
                else "none (first build)",
                "settings": asdict(grouping.settings),
                "embedding_model": str(found.model) if found.model else "no vectors yet",
                "clusters": grouping.clusters,
                "kmeans": ("fitted: " if found.refit.needed else "") + found.refit.reason,
                "clusters_decided": found.clusters_decided,
                "clips_decided": found.clips_decided,
                "dagster/row_count": grouping.table.num_rows,
                "dagster/uri": Location(layout.full_location(run.storage.root, layout.near_duplicates_key())),
            }
        }
    )


def duplicate_rate_steady(run: ProductRun) -> Checked:
    summary = read_near_duplicates_summary(run.storage) or {}
    rate = float(summary.get("duplicate_rate", 0.0))
    baseline = summary.get("baseline_duplicate_rate", summary.get("previous_duplicate_rate"))
    jumped = rate_jumped(None if baseline is None else float(baseline), rate)
    return Checked(
        passed=not jumped,
        severity="warn",
        description=f"duplicate rate {rate:.2%}, last accepted "
        + ("none" if baseline is None else f"{float(baseline):.2%}"),
        metadata={
            "duplicate_rate": rate,
            "baseline_duplicate_rate": float(baseline) if baseline is not None else "none",
            "tolerance": DEFAULT_RATE_JUMP,
        },
    )


def figures(storage: Storage) -> Metadata:
    duplicates = read_near_duplicates_summary(storage)
    return {
        "near_duplicate_groups": int(duplicates["groups"]) if duplicates else None,
        "duplicate_rate": float(duplicates["duplicate_rate"]) if duplicates else None,
    }


PRODUCT = DerivedProduct(
    name=NEAR_DUPLICATES,
    outputs=(
        ProductOutput(
            NEAR_DUPLICATES,
            "Near-duplicate passed clips across the whole dataset, by NeMo Curator's semantic dedup rule (k-means "
            "clusters; within each, clips ranked by which_to_keep and one removed when an earlier-ranked clip is "
            "at cosine similarity >= 1 - eps), over the dataset's configured embedding model's vectors. "
            "dataset/near_duplicates.parquet: one row per clip with NeMo's centroid, cosine_dist_to_cent, max_id, "
            "cosine_sim_score and kept. rule 'transitive' writes union-find groups (one row per member) with the "
            "longest clip kept.",
            frozenset({"parquet"}),
        ),
    ),
    build=build,
    depends_on=(CLIP_VECTORS,),
    settings=NearDuplicatesSettings,
    run_options=NearDuplicatesActions,
    checks=(
        ProductCheck(
            "duplicate_rate_steady",
            NEAR_DUPLICATES,
            f"Warns when the duplicate rate rose more than {DEFAULT_RATE_JUMP:.0%} (absolute) above the last rate "
            "it accepted: a re-ingested batch or a broken embedding model looks like this. It keeps warning until "
            "a build's rate is back within that, or a run with accept_rate takes the new rate.",
            duplicate_rate_steady,
        ),
    ),
    figures=figures,
)
