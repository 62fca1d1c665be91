"""NIfTI-1 writers and the one function that builds the RAS affine from DICOM geometry.

DICOM positions are LPS (x to the patient's left, y to posterior); NIfTI and NiiVue use RAS
(x to the right, y to anterior). Every affine in the pipeline comes from
`ras_affine_from_lps` and is then only composed with voxel-index maps, so image and mask
always agree. Arrays in the pipeline are (z, y, x); NIfTI stores (x, y, z), so the writers
transpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

#: qform and sform code written with the affine: 1 = scanner-based anatomical coordinates.
XFORM_CODE_SCANNER = 1
#: NIFTI_INTENT_LABEL: voxel values are label indices.
NIFTI_INTENT_LABEL = 1002

_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


def ras_affine_from_lps(
    origin_lps: Sequence[float],
    x_axis_lps: Sequence[float],
    y_axis_lps: Sequence[float],
    z_axis_lps: Sequence[float],
    spacing_mm_zyx: Sequence[float],
) -> np.ndarray:
    """Build the 4x4 RAS affine of a voxel grid described in DICOM (LPS) terms.

    Parameters
    ----------
    origin_lps : (3,) float
        LPS position in mm of the centre of voxel (0, 0, 0), e.g. (0020,0032) Image
        Position (Patient) of the first slice.
    x_axis_lps, y_axis_lps, z_axis_lps : (3,) float
        Unit vectors along increasing voxel index i (columns, the row cosine of (0020,0037)),
        j (rows, the column cosine) and k (slices, the slice normal).
    spacing_mm_zyx : (3,) float
        Voxel spacing along k, j, i in mm.

    Returns
    -------
    ndarray of float64, shape (4, 4)
        Maps NIfTI voxel indices (i, j, k, 1) to RAS mm: the LPS affine with its x and y rows
        negated.
    """
    spacing_z, spacing_y, spacing_x = (float(value) for value in spacing_mm_zyx)
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(x_axis_lps, dtype=np.float64) * spacing_x
    affine[:3, 1] = np.asarray(y_axis_lps, dtype=np.float64) * spacing_y
    affine[:3, 2] = np.asarray(z_axis_lps, dtype=np.float64) * spacing_z
    affine[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
    affine[:2, :] *= -1.0
    return affine


def write_image_nifti(hu_zyx: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """Write a HU volume (z, y, x) as int16 NIfTI, rounded and clipped to the int16 range."""
    values = np.clip(np.rint(np.asarray(hu_zyx, dtype=np.float64)), _INT16_MIN, _INT16_MAX)
    return _write_nifti(values.astype(np.int16), affine_ras, Path(path), is_label=False)


def write_mask_nifti(mask_zyx: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """Write a label mask (z, y, x) as uint8 NIfTI with intent NIFTI_INTENT_LABEL.

    The mask must already be on the image's grid: it is written as given, never
    interpolated.

    Raises
    ------
    ValueError
        The mask is not 3D, not of an integer or boolean dtype, or has values outside 0..255.
    """
    mask = np.asarray(mask_zyx)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"mask must hold integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask labels must lie in 0..255")
    return _write_nifti(mask.astype(np.uint8), affine_ras, Path(path), is_label=True)


def _write_nifti(
    data_zyx: np.ndarray, affine_ras: np.ndarray, path: Path, *, is_label: bool
) -> Path:
    affine = np.asarray(affine_ras, dtype=np.float64)
    data_xyz = np.ascontiguousarray(data_zyx.transpose(2, 1, 0))
    image = nib.Nifti1Image(data_xyz, affine)
    header = image.header
    header.set_data_dtype(data_zyx.dtype)
    image.set_qform(affine, code=XFORM_CODE_SCANNER)
    image.set_sform(affine, code=XFORM_CODE_SCANNER)
    header.set_xyzt_units(xyz="mm", t="sec")
    header.set_slope_inter(1.0, 0.0)
    if is_label:
        header.set_intent("label", name="label")
    nib.save(image, str(path))
    return path
