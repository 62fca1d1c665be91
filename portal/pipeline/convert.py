"""The study conversion the worker runs: ZIP in, NPZ + NIfTI images + report out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .archive import DEFAULT_LIMITS, ArchiveLimits, read_archive
from .errors import PipelineError
from .identifiers import PatientIdentifiers, read_identifiers
from .nifti import (
    NativeNiftiWriter,
    native_file_affine,
    write_image_nifti,
    write_native_nifti,
)
from .npz import write_inference_npz
from .report import PipelineWarning, build_report, write_report
from .resample import (
    DEFAULT_WINDOW_CENTER,
    DEFAULT_WINDOW_WIDTH,
    resample_to_shape,
    spacing_from_affine,
    window_volume,
)
from .series import SeriesCandidate, StudyIndex, choose_series, discover_series
from .volume import Volume, load_volume

logger = logging.getLogger(__name__)

NPZ_NAME = "volume.npz"
IMAGE_NAME = "image.nii.gz"
NATIVE_NAME = "native.nii.gz"
REPORT_NAME = "report.json"

#: Bytes per voxel assumed when deciding before decoding whether the native volume fits.
_NATIVE_BYTES_PER_VOXEL = 2


@dataclass(frozen=True)
class ConversionResult:
    """Files written by `convert_study` and what they contain.

    `affine_ras` and `shape_zyx` describe the target (model) grid, shared by the NPZ image,
    the NIfTI image and the mask that inference returns on the NPZ grid. `native_path` is
    the series at its own resolution on `native_affine_ras`, or None when it was larger
    than `native_max_bytes`.
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
    native_path: Path | None = None
    native_affine_ras: np.ndarray | None = None
    native_shape_zyx: tuple[int, int, int] | None = None
    #: Read from the chosen series for the portal to encrypt; never written to a file here.
    identifiers: PatientIdentifiers = PatientIdentifiers()


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
    native_max_bytes: int | None = None,
) -> ConversionResult:
    """Convert the study in `zip_path` into `work_dir/volume.npz`, `image.nii.gz`, `native.nii.gz`
    and `report.json`.

    The ZIP is read and inflated in memory, member by member: no DICOM file (with its
    patient data) is written anywhere. `native.nii.gz` is skipped, with a warning, when the
    native volume takes more than `native_max_bytes` bytes uncompressed (None: no limit).

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
    native_path = work_dir / NATIVE_NAME

    with read_archive(Path(zip_path), limits) as contents:
        index = discover_series(contents)
        chosen = choose_series(index, series_id)
        identifiers = read_identifiers(chosen)
        warnings = list(index.warnings)
        if index.study_count > 1:
            warnings.append(
                PipelineWarning("other_studies", params={"study_count": index.study_count})
            )
        writer = None
        if _native_fits(_planned_native_bytes(chosen), native_max_bytes):
            writer = NativeNiftiWriter(native_path, reverse_rows=True)
        volume = load_volume(chosen, warnings, sink=writer)

    # The native writer compresses in its thread while the model grid is computed here.
    hu_zyx, affine_ras = resample_to_shape(volume.hu_zyx, volume.affine_ras, target_shape_zyx)
    spacing_mm = spacing_from_affine(affine_ras)
    image_zyx = window_volume(
        hu_zyx, volume.modality, window_center=window_center, window_width=window_width
    )
    npz_path = write_inference_npz(
        work_dir / NPZ_NAME, image_zyx, spacing_mm, volume.modality, categories
    )
    del image_zyx
    image_path = write_image_nifti(hu_zyx, affine_ras, work_dir / IMAGE_NAME)

    written_native = _finish_native(volume, writer, native_path, native_max_bytes, warnings)
    native_affine_ras = native_file_affine(volume.affine_ras, volume.hu_zyx.shape[1])

    output = {
        "shape_zyx": list(target_shape_zyx),
        "spacing_mm_zyx": [round(value, 6) for value in spacing_mm],
        "affine_ras": np.round(affine_ras, 6).tolist(),
        "modality": volume.modality,
        "native_shape_zyx": list(volume.hu_zyx.shape),
        "native_spacing_mm_zyx": [round(value, 6) for value in volume.spacing_mm],
        "native_affine_ras": np.round(native_affine_ras, 6).tolist(),
        "native_written": written_native is not None,
        "native_dtype": str(volume.hu_zyx.dtype),
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
        native_path=written_native,
        native_affine_ras=native_affine_ras,
        native_shape_zyx=tuple(volume.hu_zyx.shape),
        identifiers=identifiers,
    )


def _planned_native_bytes(candidate: SeriesCandidate) -> int:
    first = candidate.slices[0]
    return candidate.slice_count * first.rows * first.columns * _NATIVE_BYTES_PER_VOXEL


def _native_fits(size_bytes: int, limit_bytes: int | None) -> bool:
    return limit_bytes is None or size_bytes <= limit_bytes


def _finish_native(
    volume: Volume,
    writer: NativeNiftiWriter | None,
    native_path: Path,
    limit_bytes: int | None,
    warnings: list[PipelineWarning],
) -> Path | None:
    """Complete `native.nii.gz`: wait for the streamed file, or write it now when it fits."""
    if writer is not None and volume.streamed:
        return writer.finish()
    if writer is not None:
        writer.abort()
    size_bytes = int(volume.hu_zyx.size) * (2 if volume.hu_zyx.dtype == np.int16 else 4)
    if not _native_fits(size_bytes, limit_bytes):
        warnings.append(
            PipelineWarning(
                "native_too_large", params={"native_bytes": size_bytes, "limit_bytes": limit_bytes}
            )
        )
        return None
    return write_native_nifti(volume.hu_zyx, volume.affine_ras, native_path, reverse_rows=True)


def inspect_study(
    zip_path: Path, *, series_id: str | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Return the report of a study's series and the one that would be chosen, decoding no pixels.

    Never raises a `PipelineError`: the report's `error` is then `{"code", "message"}`,
    with the series found so far (none when the archive itself was rejected).
    """
    index: StudyIndex | None = None
    try:
        with read_archive(Path(zip_path), limits) as contents:
            index = discover_series(contents)
        chosen = choose_series(index, series_id)
    except PipelineError as error:
        if index is None:
            return {"series": [], "warnings": [], "error": _error_dict(error)}
        report = build_report(index, chosen=None, warnings=index.warnings)
        report["error"] = _error_dict(error)
        return report
    report = build_report(index, chosen=chosen, warnings=index.warnings)
    report["error"] = None
    return report


def _error_dict(error: PipelineError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}
