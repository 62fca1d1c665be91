"""Independent geometry checks: sample an output volume at DICOM world positions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def voxel_indices(affine_ras: np.ndarray, world_lps: np.ndarray) -> np.ndarray:
    """Map LPS points (n, 3) through the inverse affine to NIfTI voxel indices (i, j, k)."""
    world_ras = np.asarray(world_lps, dtype=np.float64).reshape(-1, 3) * LPS_TO_RAS
    homogeneous = np.c_[world_ras, np.ones(len(world_ras))]
    return (np.linalg.inv(affine_ras) @ homogeneous.T).T[:, :3]


def sample_at_world(
    volume_zyx: np.ndarray, affine_ras: np.ndarray, world_lps: np.ndarray, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a (z, y, x) volume trilinearly at LPS points.

    Returns the values and a mask of the points that lie at least `margin` voxels inside the
    grid (points outside take the nearest edge value and should be ignored).
    """
    ijk = voxel_indices(affine_ras, world_lps)
    coordinates = ijk[:, ::-1].T  # (k, j, i) rows for a (z, y, x) array
    values = ndimage.map_coordinates(
        np.asarray(volume_zyx, dtype=np.float64), coordinates, order=1, mode="nearest"
    )
    upper = np.array(volume_zyx.shape[::-1]) - 1 - margin
    inside = np.all((ijk >= margin - 1e-6) & (ijk <= upper + 1e-6), axis=1)
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
