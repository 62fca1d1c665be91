"""Writers of input NPZ files in the inference API format, for tests."""

from pathlib import Path

import numpy as np

from tests.segmenter.phantoms import ChestPhantom


def write_input_npz(
    path: Path,
    phantom: ChestPhantom,
    *,
    modality: str = "CT",
    categories: tuple[int, ...] = (),
    overrides: dict | None = None,
) -> Path:
    """Write ``phantom`` as an uncompressed input NPZ; ``overrides`` replace or add arrays.

    An override of ``None`` leaves that array out.
    """
    arrays = {
        "image": phantom.image,
        "spacing_mm": phantom.spacing_mm,
        "modality": np.str_(modality),
        "categories": np.asarray(categories, dtype=np.int32),
    }
    arrays.update(overrides or {})
    arrays = {key: value for key, value in arrays.items() if value is not None}
    with path.open("wb") as output:
        np.savez(output, **arrays)
    return path
