"""`native.nii.gz` written by the CLI, sampled at stored pixels of every real study.

Each usable series of the real studies is converted with `python -m portal.pipeline
convert`, and the NIfTI file on disk is sampled at the world position of stored pixels
(from Image Position, Image Orientation and Pixel Spacing of the raw DICOM). To keep the
run short, the check reads the first, the middle and the last slice along the normal
plus two more at random, every pixel of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.pipeline.conftest import CHEST_ZIP, MR_ZIP, PHILIPS_ZIP
from tests.pipeline.truth import load_nifti_zyx, sample_at_world, stored_pixels

#: (study, series number or None for the chosen one, whether the series is gantry-tilted)
SERIES = [
    (CHEST_ZIP, None, False),
    (PHILIPS_ZIP, 301, True),
    (PHILIPS_ZIP, 201, True),
    (MR_ZIP, 5001, False),
    (MR_ZIP, 6001, False),
]


#: Voxels an edge pixel may fall outside the grid through the float32 affine of the file.
NIFTI_AFFINE_TOLERANCE = 1e-3


@dataclass
class NativeOutput:
    """The native volume the CLI wrote, and the raw files of its series, by slice position."""

    volume_zyx: np.ndarray
    affine_ras: np.ndarray
    report: dict
    sorted_paths: list[Path]


def _convert(zip_path: Path, series_number: int | None, folder: Path) -> NativeOutput:
    out = folder / "out"
    command = [sys.executable, "-m", "portal.pipeline", "convert", str(zip_path), "--out", str(out)]
    if series_number is not None:
        inspected = subprocess.run(
            [sys.executable, "-m", "portal.pipeline", "inspect", str(zip_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        series = json.loads(inspected.stdout)["series"]
        series_id = next(s["series_id"] for s in series if s["series_number"] == series_number)
        command += ["--series", series_id]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr

    report = json.loads((out / "report.json").read_text())
    chosen = next(s for s in report["series"] if s["chosen"])
    volume_zyx, affine_ras = load_nifti_zyx(out / "native.nii.gz")
    return NativeOutput(
        volume_zyx=volume_zyx,
        affine_ras=affine_ras,
        report=report,
        sorted_paths=_write_sorted_members(zip_path, chosen["member_indices"], folder / "dicom"),
    )


def _write_sorted_members(zip_path: Path, member_indices: list[int], folder: Path) -> list[Path]:
    """Write the series' members by archive index, sorted by position along the normal."""
    folder.mkdir()
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
        paths = []
        for index in member_indices:
            path = folder / f"{index:06d}"
            path.write_bytes(archive.read(infos[index]))
            paths.append(path)

    def distance_along_normal(path: Path) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(orientation[:3], orientation[3:])
        return float(np.asarray(ds.ImagePositionPatient, dtype=np.float64) @ normal)

    return sorted(paths, key=distance_along_normal)


def _checked_slices(paths: list[Path]) -> list[Path]:
    """Return the first, middle and last slice, and two more chosen at random."""
    count = len(paths)
    chosen = {0, count // 2, count - 1}
    rng = np.random.default_rng(3)
    chosen.update(int(i) for i in rng.choice(count, size=min(2, count), replace=False))
    return [paths[i] for i in sorted(chosen)]


@pytest.fixture(
    scope="module", params=SERIES, ids=["chest", "philips-301", "philips-201", "mr-5001", "mr-6001"]
)
def native(request, shared_dicom_dir, tmp_path_factory):
    zip_name, series_number, is_tilted = request.param
    zip_path = shared_dicom_dir / zip_name
    if not zip_path.is_file():
        pytest.skip(f"real study {zip_name} not found in {shared_dicom_dir}")
    output = _convert(zip_path, series_number, tmp_path_factory.mktemp("native"))
    return output, series_number, is_tilted


def test_native_nifti_matches_stored_pixels(native):
    output, series_number, is_tilted = native
    paths = _checked_slices(output.sorted_paths)
    points, expected = stored_pixels(paths)

    values, inside = sample_at_world(
        output.volume_zyx, output.affine_ras, points, tolerance=NIFTI_AFFINE_TOLERANCE
    )
    errors = np.abs(values - expected)

    if series_number is not None:
        chosen = next(s for s in output.report["series"] if s["chosen"])
        assert chosen["series_number"] == series_number
    assert inside.all()
    if is_tilted:
        # Resampled onto an orthogonal grid: interpolation along the normal between
        # sheared slices, then rounding nowhere (the file is float32).
        assert np.median(errors) < 1.0
        assert np.percentile(errors, 95) < 10.0
        assert np.corrcoef(values, expected)[0, 1] > 0.999
    else:
        # Stacked as stored: slice positions sit up to 1e-4 mm off the mean step, so
        # steep MR edges differ slightly; CT values are exact.
        np.testing.assert_allclose(values, expected, atol=0.05)


def test_native_nifti_keeps_first_and_last_slice(native):
    output, _, _ = native
    first, last = output.sorted_paths[0], output.sorted_paths[-1]
    for path, k in ((first, 0), (last, output.volume_zyx.shape[0] - 1)):
        points, _ = stored_pixels([path], per_slice=50)
        ras = points * np.array([-1.0, -1.0, 1.0])
        ijk = (np.linalg.inv(output.affine_ras) @ np.c_[ras, np.ones(len(ras))].T)[:3]

        # Each edge slice lies on the first or last plane of the grid, within 0.05 voxels.
        np.testing.assert_allclose(ijk[2], k, atol=0.05)
