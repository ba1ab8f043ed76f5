"""Cheap, honest visual descriptors computed from decoded frames: pure numpy, no models.

They stand in for NeMo Curator's learned embeddings and motion-vector scores when clip-assets makes its
own processed videos (samples, tests, demos). The names say what they are, so nobody downstream
mistakes a colour layout for a semantic embedding or a pixel difference for optical flow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLOR_GRID_ALGORITHM = "color-grid-4x4-v1"
COLOR_GRID_SIZE = 4
COLOR_GRID_DIM = COLOR_GRID_SIZE * COLOR_GRID_SIZE * 3

# Motion is measured on grayscale frames scaled to this square; 16x16 patches of 8x8 pixels give the
# 256 patches that NeMo's `motion_score_per_patch_min_256` is named after.
MOTION_FRAME_SIZE = 128
MOTION_GRID_SIZE = 16
# Where an ingested clip keeps its `MotionScore` (in its `extra_metadata`, so in its metadata JSON):
# grey levels 0..255 of frame differences, a scale of its own. NeMo's `motion_score_*` keys hold
# motion-vector magnitudes (about 0.001 to 0.02) and are left empty rather than filled with another scale.
FRAME_DIFFERENCE_MEAN = "frame_difference_motion_mean"
FRAME_DIFFERENCE_PATCH_MIN = "frame_difference_motion_per_patch_min_256"


def grid_means(image: np.ndarray, grid: int) -> np.ndarray:
    """Mean of each cell of a `grid` x `grid` partition of `image` (H, W[, C]) as float64.

    Cells split the rows and columns as evenly as integers allow, so every pixel counts exactly once
    whatever the image size.
    """
    height, width = image.shape[:2]
    if height < grid or width < grid:
        raise ValueError(f"a {width}x{height} image is too small for a {grid}x{grid} grid")
    row_edges = np.linspace(0, height, grid + 1).astype(np.int64)
    col_edges = np.linspace(0, width, grid + 1).astype(np.int64)
    sums = np.add.reduceat(image, row_edges[:-1], axis=0, dtype=np.int64)
    sums = np.add.reduceat(sums, col_edges[:-1], axis=1, dtype=np.int64)
    counts = np.outer(np.diff(row_edges), np.diff(col_edges))
    if image.ndim == 3:
        counts = counts[:, :, np.newaxis]
    means: np.ndarray = sums / counts
    return means


def color_grid_embedding(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The `color-grid-4x4-v1` embedding: mean RGB of a 4x4 grid, averaged over `frames`, L2-normalised.

    `frames` are RGB uint8 arrays (H, W, 3), typically a few frames sampled across a clip. Returns 48
    float32 values (row-major cells, RGB within a cell) of unit norm, so cosine similarity compares
    colour layout. An all-black clip has no direction; it gets the all-equal vector, the limit of an
    ever darker uniform grey, rather than NaNs.
    """
    if not frames:
        raise ValueError("color_grid_embedding needs at least one frame")
    total = np.zeros((COLOR_GRID_SIZE, COLOR_GRID_SIZE, 3))
    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 frames (H, W, 3), got {frame.dtype} {frame.shape}")
        total += grid_means(frame, COLOR_GRID_SIZE)
    vector = total.reshape(-1)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        return np.full(COLOR_GRID_DIM, 1.0 / np.sqrt(COLOR_GRID_DIM), dtype=np.float32)
    return (vector / norm).astype(np.float32)


def patch_differences(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Mean absolute difference of two grayscale uint8 frames per patch of a 16x16 grid (0..255)."""
    if previous.shape != current.shape:
        raise ValueError(f"frames differ in shape: {previous.shape} and {current.shape}")
    difference = np.abs(current.astype(np.int16) - previous.astype(np.int16))
    return grid_means(difference, MOTION_GRID_SIZE)


class MotionScore:
    """Frame-difference motion of one clip, accumulated one pair of consecutive frames at a time.

    Not NeMo's motion-vector score, but the same two summaries of it, in 0..255 grey levels:
    `global_mean` is the mean absolute difference between consecutive frames over the whole frame;
    `per_patch_min` is the smallest of the 256 per-patch means, which stays near zero when any part
    of the picture is still. A clip with fewer than two frames has no motion (0.0).
    """

    def __init__(self) -> None:
        self._patch_totals = np.zeros((MOTION_GRID_SIZE, MOTION_GRID_SIZE))
        self._pairs = 0

    def add(self, patch_means: np.ndarray) -> None:
        """Add one pair's `patch_differences`."""
        self._patch_totals += patch_means
        self._pairs += 1

    @property
    def global_mean(self) -> float:
        return float(self._patch_totals.mean() / self._pairs) if self._pairs else 0.0

    @property
    def per_patch_min(self) -> float:
        return float(self._patch_totals.min() / self._pairs) if self._pairs else 0.0
