"""The colour-grid embedding and the frame-difference motion score: pure numpy, checked by properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clip_assets.producer.descriptor import (
    COLOR_GRID_DIM,
    MOTION_FRAME_SIZE,
    MotionScore,
    color_grid_embedding,
    grid_means,
    patch_differences,
)

rgb_frames = st.integers(4, 40).flatmap(
    lambda h: st.integers(4, 40).flatmap(lambda w: arrays(np.uint8, (h, w, 3), elements=st.integers(0, 255)))
)


@settings(max_examples=60, deadline=None)
@given(st.lists(rgb_frames, min_size=1, max_size=4))
def test_embedding_is_48_finite_float32_values_of_unit_norm(frames: list[np.ndarray]) -> None:
    vector = color_grid_embedding(frames)

    assert vector.shape == (COLOR_GRID_DIM,) == (48,)
    assert vector.dtype == np.float32
    assert np.isfinite(vector).all()
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_black_frames_get_the_all_equal_direction_not_nans() -> None:
    vector = color_grid_embedding([np.zeros((24, 32, 3), dtype=np.uint8)])

    assert np.allclose(vector, 1 / np.sqrt(48))


def test_embedding_follows_colour_layout_not_image_size() -> None:
    left_red = np.zeros((60, 80, 3), dtype=np.uint8)
    left_red[:, :40] = (255, 0, 0)
    left_red[:, 40:] = (0, 0, 255)
    mirrored = left_red[:, ::-1].copy()
    half_size = left_red[::2, ::2].copy()

    assert np.allclose(color_grid_embedding([left_red]), color_grid_embedding([half_size]))
    assert float(color_grid_embedding([left_red]) @ color_grid_embedding([mirrored])) < 0.5
    # Cell 0 (top left) is pure red: only its R component is set.
    assert color_grid_embedding([left_red])[:3].tolist() == pytest.approx([0.25, 0.0, 0.0], abs=1e-6)


@pytest.mark.parametrize(
    "frames",
    [[], [np.zeros((24, 32), dtype=np.uint8)], [np.zeros((24, 32, 3), dtype=np.float32)]],
    ids=["no frames", "grayscale", "float"],
)
def test_embedding_rejects_what_is_not_rgb_uint8(frames: list[np.ndarray]) -> None:
    with pytest.raises(ValueError):
        color_grid_embedding(frames)


@settings(max_examples=60, deadline=None)
@given(rgb_frames, st.integers(1, 4))
def test_grid_means_average_every_pixel_exactly_once(image: np.ndarray, grid: int) -> None:
    cells = grid_means(image, grid)
    counts = np.outer(*(np.diff(np.linspace(0, n, grid + 1).astype(int)) for n in image.shape[:2]))

    assert cells.shape == (grid, grid, 3)
    assert np.allclose((cells * counts[..., None]).sum(axis=(0, 1)), image.sum(axis=(0, 1), dtype=np.int64))


def test_motion_is_zero_for_a_still_picture_and_counts_changed_pixels() -> None:
    still = np.full((MOTION_FRAME_SIZE, MOTION_FRAME_SIZE), 100, dtype=np.uint8)
    moved = still.copy()
    moved[:8, :8] = 200  # exactly the top-left patch of the 16x16 grid

    score = MotionScore()
    score.add(patch_differences(still, still))
    score.add(patch_differences(still, moved))

    assert score.global_mean == pytest.approx(100 / 256 / 2)
    assert score.per_patch_min == 0.0
    assert patch_differences(still, moved)[0, 0] == 100


def test_a_clip_without_frame_pairs_has_no_motion() -> None:
    assert (MotionScore().global_mean, MotionScore().per_patch_min) == (0.0, 0.0)
