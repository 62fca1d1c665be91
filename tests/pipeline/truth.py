"""Independent geometry checks: sample an output volume at DICOM world positions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from scipy import ndimage

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def voxel_indices(affine_ras: np.ndarray, world_lps: np.ndarray) -> np.ndarray:
    """Map LPS points (n, 3) through the inverse affine to NIfTI voxel indices (i, j, k)."""
    world_ras = np.asarray(world_lps, dtype=np.float64).reshape(-1, 3) * LPS_TO_RAS
    homogeneous = np.c_[world_ras, np.ones(len(world_ras))]
    return (np.linalg.inv(affine_ras) @ homogeneous.T).T[:, :3]


def sample_at_world(
    volume_zyx: np.ndarray,
    affine_ras: np.ndarray,
    world_lps: np.ndarray,
    margin: float = 0.0,
    tolerance: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a (z, y, x) volume trilinearly at LPS points.

    Returns the values and a mask of the points that lie at least `margin` voxels, less
    `tolerance` voxels, inside the grid (points outside take the nearest edge value and
    should be ignored). An affine read from a NIfTI header is float32, which moves the
    edge points by about 1e-5 voxels, so such checks need a larger `tolerance`.
    """
    ijk = voxel_indices(affine_ras, world_lps)
    coordinates = ijk[:, ::-1].T  # (k, j, i) rows for a (z, y, x) array
    values = ndimage.map_coordinates(
        np.asarray(volume_zyx, dtype=np.float64), coordinates, order=1, mode="nearest"
    )
    upper = np.array(volume_zyx.shape[::-1]) - 1 - margin
    inside = np.all((ijk >= margin - tolerance) & (ijk <= upper + tolerance), axis=1)
    return values, inside


def ras_centroid(mask_zyx: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """Return the RAS centroid (mm) of the true voxels of a (z, y, x) mask."""
    k, j, i = np.nonzero(mask_zyx)
    ijk = np.c_[i, j, k, np.ones(len(i))]
    return (affine_ras @ ijk.T).T[:, :3].mean(axis=0)


def load_nifti_zyx(path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI image as a (z, y, x) array with its RAS affine."""
    image = nib.load(path)
    return np.asanyarray(image.dataobj).transpose(2, 1, 0), image.affine


def stored_pixels(paths: list[Path], per_slice: int | None = None, seed: int = 0):
    """Return world LPS positions and HU of stored pixels, computed from the raw tags.

    With `per_slice`, a random sample of that many pixels per file; otherwise all pixels.
    Padding pixels, (0028,0120), are left out: their value is replaced on purpose.
    """
    rng = np.random.default_rng(seed)
    points, values = [], []
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        hu = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        if per_slice is None:
            rows, columns = np.nonzero(np.ones(stored.shape, dtype=bool))
        else:
            rows = rng.integers(0, ds.Rows, per_slice)
            columns = rng.integers(0, ds.Columns, per_slice)
        keep = stored[rows, columns] != ds.get("PixelPaddingValue", np.inf)
        rows, columns = rows[keep], columns[keep]
        points.append(
            np.asarray(ds.ImagePositionPatient, dtype=np.float64)
            + columns[:, None] * column_spacing * orientation[:3]
            + rows[:, None] * row_spacing * orientation[3:]
        )
        values.append(hu[rows, columns])
    return np.concatenate(points), np.concatenate(values)
