"""The NPZ sent to the inference API: the windowed volume and nothing that names anyone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

INFERENCE_MODALITIES = ("CT", "MR")


def write_inference_npz(
    path: Path,
    image_zyx: np.ndarray,
    spacing_mm: Sequence[float],
    modality: str,
    categories: Sequence[int] = (),
) -> Path:
    """Write the inference input as an uncompressed NPZ with exactly four arrays.

    Parameters
    ----------
    path : Path
        File to write (no suffix is added).
    image_zyx : ndarray, shape (z, y, x)
        Windowed volume in 0..1, stored as float32 `image`.
    spacing_mm : (3,) float
        Voxel spacing (z, y, x) in mm, stored as float32 `spacing_mm`.
    modality : {"CT", "MR"}
        Stored as a numpy unicode scalar `modality` (no pickled object).
    categories : sequence of int
        Label values to segment, stored as int32 `categories`.

    Raises
    ------
    ValueError
        An argument has the wrong shape, range or value.
    """
    image = np.asarray(image_zyx, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x), got shape {image.shape}")
    if not np.all(np.isfinite(image)) or image.min() < 0.0 or image.max() > 1.0:
        raise ValueError("image values must be finite and within 0..1")
    spacing = np.asarray(spacing_mm, dtype=np.float32).reshape(-1)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be three positive values, got {spacing_mm!r}")
    if modality not in INFERENCE_MODALITIES:
        raise ValueError(f"modality must be one of {INFERENCE_MODALITIES}, got {modality!r}")
    label_values = np.asarray(list(categories), dtype=np.int32).reshape(-1)

    path = Path(path)
    with open(path, "wb") as handle:
        np.savez(
            handle,
            image=image,
            spacing_mm=spacing,
            modality=np.str_(modality),
            categories=label_values,
        )
    return path
