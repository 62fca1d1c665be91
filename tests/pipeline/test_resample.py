"""Target grid ("align corners = False") and intensity windows."""

from __future__ import annotations

import numpy as np
import pytest

from portal.pipeline import resample_to_shape, target_affine, window_ct, window_volume
from portal.pipeline.resample import sample_linear, target_coordinates, window_percentile


def _affine(spacing_xyz=(0.5, 0.8, 2.0), origin=(10.0, -20.0, 30.0)):
    affine = np.diag([*spacing_xyz, 1.0])
    affine[:3, 3] = origin
    return affine


def test_target_coordinates_align_voxel_edges():
    # Downsampling 4 -> 2: each target voxel centre sits between two source centres.
    np.testing.assert_allclose(target_coordinates(4, 2), [0.5, 2.5])
    # Upsampling 2 -> 4: the outer target centres lie a quarter voxel outside the source ones.
    np.testing.assert_allclose(target_coordinates(2, 4), [-0.25, 0.25, 0.75, 1.25])


def test_target_spacing_is_source_extent_over_count():
    source = _affine()
    affine = target_affine(source, (30, 100, 80), (64, 50, 160))

    spacing_xyz = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing_xyz, [0.5 * 80 / 160, 0.8 * 100 / 50, 2.0 * 30 / 64])


def test_target_grid_covers_the_same_extent():
    source = _affine()
    source_shape, target_shape = (30, 100, 80), (64, 50, 160)
    affine = target_affine(source, source_shape, target_shape)

    def corner(matrix, shape_zyx):
        # World position of the outer edge of the voxel grid, half a voxel before index 0.
        return (matrix @ [-0.5, -0.5, -0.5, 1.0])[:3], (
            matrix @ [shape_zyx[2] - 0.5, shape_zyx[1] - 0.5, shape_zyx[0] - 0.5, 1.0]
        )[:3]

    for source_corner, target_corner in zip(
        corner(source, source_shape), corner(affine, target_shape), strict=True
    ):
        np.testing.assert_allclose(source_corner, target_corner, atol=1e-9)


def test_resampled_values_keep_world_positions():
    source_affine = _affine()
    shape = (6, 10, 12)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    world = np.einsum("ab,b...->a...", source_affine, np.stack([i, j, k, np.ones_like(i)]))
    volume = (2.0 * world[0] - world[1] + 0.5 * world[2]).astype(np.float32)

    target, affine = resample_to_shape(volume, source_affine, (9, 5, 16))

    tk, tj, ti = np.meshgrid(*(np.arange(n) for n in target.shape), indexing="ij")
    target_world = np.einsum("ab,b...->a...", affine, np.stack([ti, tj, tk, np.ones_like(ti)]))
    expected = 2.0 * target_world[0] - target_world[1] + 0.5 * target_world[2]
    # Away from the clamped outer half voxel, a linear field is reproduced exactly.
    core = (slice(1, -1), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(target[core], expected[core], rtol=1e-5, atol=1e-3)
    assert target.dtype == np.float32


def test_resample_to_same_shape_is_identity():
    volume = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    affine = _affine()

    target, target_affine_ = resample_to_shape(volume, affine, (4, 5, 6))

    np.testing.assert_array_equal(target, volume)
    np.testing.assert_allclose(target_affine_, affine)


def test_sample_linear_fills_outside():
    values = np.array([[0.0, 10.0, 20.0]], dtype=np.float32)

    result = sample_linear(values, 1, np.array([-0.5, 0.0, 0.5, 2.0, 2.5]), fill_value=-1.0)

    np.testing.assert_allclose(result, [[-1.0, 0.0, 5.0, 20.0, -1.0]])


def test_ct_window_maps_to_unit_range():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])

    windowed = window_ct(hu, window_center=40.0, window_width=400.0)

    np.testing.assert_allclose(windowed, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert windowed.dtype == np.float32


def test_ct_window_rejects_zero_width():
    with pytest.raises(ValueError, match="window_width"):
        window_ct(np.zeros(3), 40.0, 0.0)


def test_mr_window_uses_percentiles():
    values = np.arange(1001, dtype=np.float32)

    windowed = window_volume(values, "MR")

    assert windowed.min() == 0.0
    assert windowed.max() == 1.0
    assert windowed[500] == pytest.approx(0.5, abs=1e-3)
    assert windowed[5] == 0.0
    assert windowed[995] == 1.0


def test_constant_mr_volume_windows_to_zero():
    np.testing.assert_array_equal(window_percentile(np.full(10, 7.0)), np.zeros(10))
