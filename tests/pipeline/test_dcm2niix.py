"""dcm2niix as a second opinion on geometry and values, for untilted series only.

dcm2niix's tilt-corrected outputs are wrong for some series, so tilted input is checked
against the DICOM itself (test_volume, test_real_studies) and never against dcm2niix.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from portal.pipeline import choose_series, convert_study, discover_series, load_volume
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    CORONAL,
    SAGITTAL,
    SeriesSpec,
    build_series,
    mr_spec,
    series_members,
    write_series_folder,
    write_zip,
)


@pytest.fixture(scope="session")
def dcm2niix() -> str:
    """Return the dcm2niix executable installed next to this Python, or on PATH."""
    found = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which(
        "dcm2niix"
    )
    if found is None:
        pytest.skip("dcm2niix is not installed (pip package dcm2niix in requirements-dev.txt)")
    return found


def _run_dcm2niix(executable: str, dicom_folder: Path, out_folder: Path) -> nib.Nifti1Image:
    out_folder.mkdir()
    completed = subprocess.run(
        [
            executable,
            "-z",
            "n",
            "-b",
            "n",
            "-f",
            "volume",
            "-o",
            str(out_folder),
            str(dicom_folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    outputs = sorted(out_folder.glob("*.nii"))
    assert len(outputs) == 1, [p.name for p in outputs]
    return nib.load(outputs[0])


def _canonical(volume_zyx: np.ndarray, affine_ras: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(volume_zyx.transpose(2, 1, 0), affine_ras))


def _load(zip_path: Path, members_dir: Path):
    index = discover_series(open_archive(zip_path))
    return load_volume(choose_series(index))


#: Untilted synthetic series, each compared with dcm2niix's output.
UNTILTED_SPECS = pytest.mark.parametrize(
    "spec",
    [
        SeriesSpec(instance_order="reversed"),
        SeriesSpec(orientation=SAGITTAL, instance_order="shuffled"),
        SeriesSpec(orientation=CORONAL, steps_mm=2.5),
        SeriesSpec(encoding="uint16", origin_lps=(100.0, 50.0, -300.0)),
        SeriesSpec(orientation=(0.8, 0.6, 0.0, -0.36, 0.48, 0.8)),
        mr_spec(orientation=SAGITTAL),
    ],
    ids=[
        "axial-reversed",
        "sagittal-shuffled",
        "coronal",
        "axial-uint16",
        "oblique",
        "mr-sagittal",
    ],
)


def _chest_dcm2niix(dcm2niix: str, chest_zip: Path, tmp_path: Path) -> nib.Nifti1Image:
    dicom_folder = tmp_path / "dicom"
    with zipfile.ZipFile(chest_zip) as archive:
        archive.extractall(dicom_folder)  # a trusted fixture from the project's test data
    return _run_dcm2niix(dcm2niix, dicom_folder, tmp_path / "nii")


def _assert_equal_but_padding(ours: nib.Nifti1Image, theirs: nib.Nifti1Image) -> None:
    """dcm2niix keeps padding (-2000 stored, -3024 HU); the pipeline turns it into air."""
    their_values = theirs.get_fdata()
    not_padding = their_values > -3000
    assert np.count_nonzero(~not_padding) > 0
    np.testing.assert_array_equal(ours.get_fdata()[not_padding], their_values[not_padding])
    np.testing.assert_array_equal(ours.get_fdata()[~not_padding], -1024.0)


def _synthetic_study(dcm2niix: str, tmp_path: Path, spec: SeriesSpec):
    """Write a small series of `spec` as a ZIP; return it and dcm2niix's image of the files."""
    datasets = build_series(replace(spec, rows=20, columns=18, slice_count=8))
    theirs = _run_dcm2niix(
        dcm2niix, write_series_folder(datasets, tmp_path / "dicom"), tmp_path / "nii"
    )
    return write_zip(tmp_path / "study.zip", series_members(datasets)), theirs


@UNTILTED_SPECS
def test_synthetic_series_agrees_with_dcm2niix(dcm2niix, tmp_path, spec):
    zip_path, theirs = _synthetic_study(dcm2niix, tmp_path, spec)
    volume = _load(zip_path, tmp_path / "members")

    ours = _canonical(volume.hu_zyx, volume.affine_ras)
    theirs = nib.as_closest_canonical(theirs)

    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), atol=1e-3)


def test_real_chest_ct_agrees_with_dcm2niix(dcm2niix, chest_zip, tmp_path):
    theirs = nib.as_closest_canonical(_chest_dcm2niix(dcm2niix, chest_zip, tmp_path))
    volume = _load(chest_zip, tmp_path / "members")
    ours = _canonical(volume.hu_zyx, volume.affine_ras)

    assert ours.shape == theirs.shape == (512, 512, 3)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    _assert_equal_but_padding(ours, theirs)


def _corner_centres_ras(image: nib.Nifti1Image) -> np.ndarray:
    """Return the RAS positions (8, 3) of the centres of the image's corner voxels."""
    extent = np.array(image.shape[:3]) - 1
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * extent
    return nib.affines.apply_affine(image.affine, corners)


def _assert_native_file_agrees(ours: nib.Nifti1Image, theirs: nib.Nifti1Image) -> None:
    """Same orientation codes and shape, corner voxels within half a voxel in world space."""
    assert nib.aff2axcodes(ours.affine) == nib.aff2axcodes(theirs.affine)
    assert ours.shape == theirs.shape
    half_voxel_mm = 0.5 * min(nib.affines.voxel_sizes(ours.affine))
    distances = np.linalg.norm(_corner_centres_ras(ours) - _corner_centres_ras(theirs), axis=1)
    assert distances.max() < half_voxel_mm, distances


@UNTILTED_SPECS
def test_native_file_agrees_with_dcm2niix(dcm2niix, tmp_path, spec):
    zip_path, theirs = _synthetic_study(dcm2niix, tmp_path, spec)
    result = convert_study(zip_path, tmp_path / "out", target_hw=(16, 16), target_slices=4)
    ours = nib.load(result.native_path)

    _assert_native_file_agrees(ours, theirs)
    # No resampling: every voxel contains the stored value, in the same place.
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), atol=1e-3)


def test_real_chest_native_file_agrees_with_dcm2niix(dcm2niix, chest_zip, tmp_path):
    theirs = _chest_dcm2niix(dcm2niix, chest_zip, tmp_path)
    ours = nib.load(convert_study(chest_zip, tmp_path / "out").native_path)

    _assert_native_file_agrees(ours, theirs)
    assert nib.aff2axcodes(ours.affine) == ("L", "A", "S")
    _assert_equal_but_padding(ours, theirs)
