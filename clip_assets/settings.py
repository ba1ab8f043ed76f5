"""NeMo Curator's ClipWriterStage knobs, with NeMo's defaults and meaning, as one pure value."""

from __future__ import annotations

from dataclasses import dataclass, field

# Marks a setting that decides how outputs are written or re-checked, never what they hold: left out of
# the output version (clip_assets.engine.output_version), so changing it rewrites nothing.
NOT_IN_OUTPUT = {"in_output_version": False}
PARALLEL_BACKENDS = ("threads", "ray")


@dataclass(frozen=True)
class WriterSettings:
    """What decides which artifacts a processed video produces.

    `caption_models`/`enhanced_caption_models` are ordered: the chunk summary keeps the caption of
    the first listed model present. `None` (NeMo would crash on it) means every model present in the
    window, in the file's order.
    """

    upload_clips: bool = True
    dry_run: bool = False
    generate_embeddings: bool = True
    generate_previews: bool = True
    generate_captions: bool = True
    embedding_algorithm: str = "cosmos-embed1"
    # The embedding model's version (e.g. Cosmos-Embed1's "224p" or "448p" variant): NeMo's tree records none
    # (its Parquet holds ids and vectors, its stage's `variant` never reaches the writer), so the dataset says
    # it; recorded with the vectors (families/clip_embeddings.py). Empty: not stated.
    embedding_version: str = ""
    caption_models: tuple[str, ...] | None = None
    enhanced_caption_models: tuple[str, ...] | None = None
    max_workers: int = 6
    input_path: str = ""
    # Full path or URL of the output root, as NeMo writes it into `clip_location`.
    output_location: str = ""
    # An unchanged partition's re-run stats every object its manifests record (a HEAD each on S3), so an
    # output changed or removed behind the manifest is rewritten. False trusts the manifests: a re-run
    # then reads one manifest per family and nothing else, and damage is left to the asset checks (which
    # read every object). Not part of the output version: it decides what is re-checked, not what is written.
    verify_unchanged_outputs: bool = field(default=True, metadata=NOT_IN_OUTPUT)
    # Where a run's partitions are written: "threads", in the run's own process; "ray", each as a Ray task
    # on the cluster that process is connected to (clip_assets.engine.ray_tasks), asking for
    # `ray_cpus_per_partition` CPUs: a partition's write waits on storage round trips for part of its time
    # (on S3 most of it), so by default two share a core.
    parallel_backend: str = field(default="threads", metadata=NOT_IN_OUTPUT)
    ray_cpus_per_partition: float = field(default=0.5, metadata=NOT_IN_OUTPUT)

    def __post_init__(self) -> None:
        if self.parallel_backend not in PARALLEL_BACKENDS:
            raise ValueError(
                f"parallel_backend must be one of {', '.join(PARALLEL_BACKENDS)}, got {self.parallel_backend!r}"
            )
        if self.ray_cpus_per_partition <= 0:
            raise ValueError(f"ray_cpus_per_partition must be > 0, got {self.ray_cpus_per_partition}")
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        if not self.embedding_algorithm:
            raise ValueError("embedding_algorithm must not be empty")
