"""Size limits a processed video must respect, so one hostile file cannot exhaust a worker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValidationLimits:
    """Upper bounds checked while streaming; defaults are generous for real curation output."""

    max_mp4_bytes: int = 2 * 1024**3
    max_webp_bytes: int = 64 * 1024**2
    max_windows_per_clip: int = 4096
    max_embedding_dim: int = 65536
    # Captions and extra_metadata text.
    max_caption_chars: int = 1_000_000
    # Caption model and embedding algorithm names (they become JSON keys).
    max_name_chars: int = 256
    max_clips: int = 1_000_000
