"""The study conversion the worker runs: ZIP in, NPZ + NIfTI + report out."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .archive import DEFAULT_LIMITS, ArchiveLimits, read_archive
from .nifti import write_image_nifti
from .npz import write_inference_npz
from .report import PipelineWarning, build_report, write_report
from .resample import (
    DEFAULT_WINDOW_CENTER,
    DEFAULT_WINDOW_WIDTH,
    resample_to_shape,
    spacing_from_affine,
    window_volume,
)
from .series import StudyIndex, choose_series, discover_series
from .volume import load_volume

logger = logging.getLogger(__name__)

NPZ_NAME = "volume.npz"
IMAGE_NAME = "image.nii.gz"
REPORT_NAME = "report.json"


@dataclass(frozen=True)
class ConversionResult:
    """Files written by `convert_study` and what they contain.

    `affine_ras` and `shape_zyx` describe the target grid, shared by the NPZ image, the
    NIfTI image and the mask that inference returns on the NPZ grid.
    """

    npz_path: Path
    image_path: Path
    report_path: Path
    report: dict[str, Any]
    affine_ras: np.ndarray
    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    modality: str
    series_description: str
    slice_count: int
    series_id: str
    warnings: tuple[PipelineWarning, ...]


def convert_study(
    zip_path: Path,
    work_dir: Path,
    *,
    target_hw: tuple[int, int] = (512, 512),
    target_slices: int = 64,
    window_center: float = DEFAULT_WINDOW_CENTER,
    window_width: float = DEFAULT_WINDOW_WIDTH,
    series_id: str | None = None,
    categories: Sequence[int] = (),
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> ConversionResult:
    """Convert the study in `zip_path` into `work_dir/volume.npz`, `image.nii.gz`, `report.json`.

    The ZIP is extracted into a temporary folder inside `work_dir` that is removed before
    returning, so no DICOM file (with its patient data) stays behind.

    Raises
    ------
    PipelineError
        A subclass with a stable `code` for each way the study can fail.
    ValueError
        `target_hw` or `target_slices` is not positive.
    """
    target_shape_zyx = (int(target_slices), int(target_hw[0]), int(target_hw[1]))
    if min(target_shape_zyx) < 1:
        raise ValueError(f"target grid must be positive, got {target_shape_zyx} (z, y, x)")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="members-", dir=work_dir) as members_dir:
        index = _index_study(Path(zip_path), Path(members_dir), limits)
        chosen = choose_series(index, series_id)
        warnings = list(index.warnings)
        volume = load_volume(chosen, warnings)

    hu_zyx, affine_ras = resample_to_shape(volume.hu_zyx, volume.affine_ras, target_shape_zyx)
    spacing_mm = spacing_from_affine(affine_ras)
    image_zyx = window_volume(
        hu_zyx, volume.modality, window_center=window_center, window_width=window_width
    )

    npz_path = write_inference_npz(
        work_dir / NPZ_NAME, image_zyx, spacing_mm, volume.modality, categories
    )
    image_path = write_image_nifti(hu_zyx, affine_ras, work_dir / IMAGE_NAME)

    output = {
        "shape_zyx": list(target_shape_zyx),
        "spacing_mm_zyx": [round(value, 6) for value in spacing_mm],
        "affine_ras": np.round(affine_ras, 6).tolist(),
        "modality": volume.modality,
        "native_shape_zyx": list(volume.hu_zyx.shape),
        "native_spacing_mm_zyx": [round(value, 6) for value in volume.spacing_mm],
        "slice_count": volume.slice_count,
        "resampled_along_normal": volume.was_resampled,
        "tilt_deg": round(volume.tilt_deg, 2),
        "window": (
            {"kind": "ct", "center": window_center, "width": window_width}
            if volume.modality == "CT"
            else {"kind": "percentile", "low": 1.0, "high": 99.0}
        ),
    }
    report = build_report(index, chosen=chosen, warnings=warnings, output=output)
    report_path = write_report(report, work_dir / REPORT_NAME)
    logger.info("Converted series %s to %s", chosen.series_id, target_shape_zyx)

    return ConversionResult(
        npz_path=npz_path,
        image_path=image_path,
        report_path=report_path,
        report=report,
        affine_ras=affine_ras,
        shape_zyx=target_shape_zyx,
        spacing_mm=spacing_mm,
        modality=volume.modality,
        series_description=volume.series_description,
        slice_count=volume.slice_count,
        series_id=chosen.series_id,
        warnings=tuple(warnings),
    )


def inspect_study(
    zip_path: Path, *, series_id: str | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Return the report of a study's series and the one that would be chosen, decoding no pixels.

    Raises the same errors as `convert_study` up to the choice of the series.
    """
    with tempfile.TemporaryDirectory(prefix="inspect-") as members_dir:
        index = _index_study(Path(zip_path), Path(members_dir), limits)
    chosen = choose_series(index, series_id)
    return build_report(index, chosen=chosen, warnings=index.warnings)


def _index_study(zip_path: Path, members_dir: Path, limits: ArchiveLimits) -> StudyIndex:
    contents = read_archive(zip_path, members_dir, limits)
    return discover_series(contents)
