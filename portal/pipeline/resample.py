"""Linear resampling on voxel grids, the model's target grid, and intensity windows.

Arrays are (z, y, x); NIfTI voxel indices (i, j, k) are (x, y, z), so an affine's column 0
belongs to array axis 2 and its column 2 to array axis 0.

Target grid convention ("align corners = False", as in PyTorch's `interpolate`): the source
and target grids cover the same extent, edge to edge. Along an axis of `n_in` voxels of
spacing `s_in` resampled to `n_out` voxels, the new spacing is `s_in * n_in / n_out`, and the
centre of target voxel `o` lies at source index `(o + 0.5) * n_in / n_out - 0.5`. Source
indices outside [0, n_in - 1] take the edge value. When an axis shrinks, each target voxel
instead takes the mean of the source voxels it covers, weighted by their overlap (a box
filter over the slab), so no source slice is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Default CT window for the model input: soft tissue, in HU.
DEFAULT_WINDOW_CENTER = 40.0
DEFAULT_WINDOW_WIDTH = 400.0
#: Percentiles that bound the MR window.
MR_WINDOW_PERCENTILES = (1.0, 99.0)

_EDGE_TOLERANCE = 1e-6


def sample_linear(
    array: np.ndarray, axis: int, coordinates: np.ndarray, fill_value: float | None = None
) -> np.ndarray:
    """Sample `array` along `axis` at fractional indices `coordinates` by linear interpolation.

    Parameters
    ----------
    array : ndarray
        Input values; other axes are carried through unchanged.
    axis : int
        Axis to resample.
    coordinates : ndarray of float, shape (m,)
        Source indices along `axis` for each output position.
    fill_value : float or None
        Value for coordinates outside [0, n - 1]. None clamps them to the edge instead.

    Returns
    -------
    ndarray of float32, with `array.shape[axis]` replaced by m.
    """
    size = array.shape[axis]
    coordinates = np.asarray(coordinates, dtype=np.float64)
    outside = (coordinates < -_EDGE_TOLERANCE) | (coordinates > size - 1 + _EDGE_TOLERANCE)
    clamped = np.clip(coordinates, 0.0, size - 1)
    lower = np.floor(clamped).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = -1
    weight = (clamped - lower).astype(np.float32).reshape(weight_shape)

    lower_values = np.take(array, lower, axis=axis).astype(np.float32, copy=False)
    upper_values = np.take(array, upper, axis=axis).astype(np.float32, copy=False)
    result = lower_values + (upper_values - lower_values) * weight
    if fill_value is not None and outside.any():
        index: list[slice | np.ndarray] = [slice(None)] * array.ndim
        index[axis] = outside
        result[tuple(index)] = fill_value
    return result


def target_coordinates(source_count: int, target_count: int) -> np.ndarray:
    """Return the source index of each target voxel centre ("align corners = False")."""
    scale = source_count / target_count
    return (np.arange(target_count, dtype=np.float64) + 0.5) * scale - 0.5


def target_affine(
    affine_ras: np.ndarray, source_shape_zyx: Sequence[int], target_shape_zyx: Sequence[int]
) -> np.ndarray:
    """Return the affine of the target grid that covers the same extent as the source grid.

    Each target voxel maps to the world position of its centre, so world positions are
    preserved: `target_affine @ [o, 1] == affine_ras @ [source_index(o), 1]`.
    """
    scales_xyz = [source_shape_zyx[axis] / target_shape_zyx[axis] for axis in (2, 1, 0)]
    voxel_map = np.eye(4)
    for column, scale in enumerate(scales_xyz):
        voxel_map[column, column] = scale
        voxel_map[column, 3] = 0.5 * scale - 0.5
    return np.asarray(affine_ras, dtype=np.float64) @ voxel_map


def average_slabs(array: np.ndarray, axis: int, target_count: int) -> np.ndarray:
    """Shrink `array` along `axis` to `target_count` voxels by overlap-weighted averaging.

    Target voxel `o` covers source edges `[o * n_in / n_out, (o + 1) * n_in / n_out)`; each
    source voxel contributes in proportion to its overlap with that interval.

    Returns
    -------
    ndarray of float32, with `array.shape[axis]` replaced by `target_count`.
    """
    source_count = array.shape[axis]
    if not 0 < target_count <= source_count:
        raise ValueError(f"target_count must be in 1..{source_count}, got {target_count}")
    moved = np.moveaxis(array, axis, 0)
    result = np.empty((target_count, *moved.shape[1:]), dtype=np.float32)
    scale = source_count / target_count
    for output in range(target_count):
        start, stop = output * scale, (output + 1) * scale
        first, last = int(np.floor(start)), min(int(np.ceil(stop)), source_count)
        accumulator = np.zeros(moved.shape[1:], dtype=np.float32)
        for source in range(first, last):
            weight = (min(stop, source + 1) - max(start, source)) / scale
            if weight > 0:
                accumulator += np.float32(weight) * moved[source].astype(np.float32, copy=False)
        result[output] = accumulator
    return np.moveaxis(result, 0, axis)


def resample_to_shape(
    volume_zyx: np.ndarray, affine_ras: np.ndarray, target_shape_zyx: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a volume to `target_shape_zyx`: linear on growing axes, slab means on shrinking.

    The passes are separable, one axis at a time, and an axis whose size already matches
    is left alone. Growing axes get the same values as trilinear sampling of each target
    point. Use it for images only: label masks must never be interpolated linearly.

    Returns
    -------
    resampled : ndarray of float32, shape `target_shape_zyx`
    affine_ras : ndarray of float64, shape (4, 4), the target grid's affine
    """
    target_shape_zyx = tuple(int(n) for n in target_shape_zyx)
    resampled = np.asarray(volume_zyx)
    for axis, target_count in enumerate(target_shape_zyx):
        source_count = resampled.shape[axis]
        if source_count == target_count:
            continue
        if target_count < source_count:
            resampled = average_slabs(resampled, axis, target_count)
        else:
            coordinates = target_coordinates(source_count, target_count)
            resampled = sample_linear(resampled, axis, coordinates)
    resampled = resampled.astype(np.float32, copy=False)
    return resampled, target_affine(affine_ras, volume_zyx.shape, target_shape_zyx)


def spacing_from_affine(affine_ras: np.ndarray) -> tuple[float, float, float]:
    """Return the voxel spacing in mm as (z, y, x) from the lengths of the affine's columns."""
    lengths = np.linalg.norm(np.asarray(affine_ras)[:3, :3], axis=0)
    return (float(lengths[2]), float(lengths[1]), float(lengths[0]))


def window_ct(
    hu: np.ndarray,
    window_center: float = DEFAULT_WINDOW_CENTER,
    window_width: float = DEFAULT_WINDOW_WIDTH,
) -> np.ndarray:
    """Map HU to 0..1 (float32): `center - width/2` to 0, `center + width/2` to 1, clipped."""
    if window_width <= 0:
        raise ValueError(f"window_width must be positive, got {window_width}")
    lower = window_center - window_width / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(lower)) / np.float32(window_width)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def window_percentile(
    values: np.ndarray, percentiles: tuple[float, float] = MR_WINDOW_PERCENTILES
) -> np.ndarray:
    """Map values to 0..1 (float32) between two percentiles of the volume, clipped.

    A constant volume maps to zeros.
    """
    values = np.asarray(values, dtype=np.float32)
    lower, upper = np.percentile(values, percentiles)
    if upper <= lower:
        return np.zeros(values.shape, dtype=np.float32)
    scaled = (values - np.float32(lower)) / np.float32(upper - lower)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def window_volume(
    volume_zyx: np.ndarray,
    modality: str,
    *,
    window_center: float = DEFAULT_WINDOW_CENTER,
    window_width: float = DEFAULT_WINDOW_WIDTH,
) -> np.ndarray:
    """Window a volume for the model: the CT window in HU, or the MR percentile window."""
    if modality == "CT":
        return window_ct(volume_zyx, window_center, window_width)
    return window_percentile(volume_zyx)
