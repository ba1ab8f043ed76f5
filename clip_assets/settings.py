"""NeMo Curator's ClipWriterStage knobs, with NeMo's defaults and meaning, as one pure value."""

from __future__ import annotations

from dataclasses import dataclass


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
    verify_unchanged_outputs: bool = True

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        if not self.embedding_algorithm:
            raise ValueError("embedding_algorithm must not be empty")
