"""convert_study end to end on synthetic studies: files, grids, report and privacy."""

from __future__ import annotations

import json
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest

from portal.pipeline import ERROR_CODES, convert_study, write_mask_nifti
from portal.pipeline.errors import PipelineError
from tests.pipeline.phantoms import (
    ACCESSION_NUMBER,
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_DATE,
    SeriesSpec,
    build_series,
    cube_field,
    localizer,
    mr_spec,
    series_members,
    structured_report,
)
from tests.pipeline.truth import ras_centroid

SMALL_GRID = {"target_hw": (48, 40), "target_slices": 16}


@pytest.fixture
def ct_study(make_zip):
    """A CT study: a localizer, a 12-slice axial series with a bright cube, and an SR."""
    spec = SeriesSpec(
        rows=32, columns=30, slice_count=12, hu_field=cube_field((4.0, -2.0, 10.0), 3.0)
    )
    datasets = localizer() + build_series(spec) + [structured_report()]
    members = series_members(datasets)
    return make_zip(members), datasets, members


def test_writes_four_files_and_no_dicom(ct_study, work_dir):
    zip_path, _, _ = ct_study

    result = convert_study(zip_path, work_dir, **SMALL_GRID)

    assert sorted(p.name for p in work_dir.iterdir()) == [
        "image.nii.gz",
        "native.nii.gz",
        "report.json",
        "volume.npz",
    ]
    assert result.npz_path == work_dir / "volume.npz"
    assert result.image_path == work_dir / "image.nii.gz"
    assert result.report_path == work_dir / "report.json"
    assert result.shape_zyx == (16, 48, 40)
    assert result.modality == "CT"
    assert result.slice_count == 12
    assert result.series_description == "PHANTOM AXIAL"


def test_npz_holds_exactly_the_inference_arrays(ct_study, work_dir):
    result = convert_study(ct_study[0], work_dir, categories=(1, 4), **SMALL_GRID)

    with np.load(result.npz_path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["categories", "image", "modality", "spacing_mm"]
        image = npz["image"]
        assert image.dtype == np.float32
        assert image.shape == (16, 48, 40)
        assert image.min() >= 0.0
        assert image.max() <= 1.0
        assert npz["spacing_mm"].dtype == np.float32
        np.testing.assert_allclose(npz["spacing_mm"], result.spacing_mm, rtol=1e-6)
        assert npz["modality"].dtype.kind == "U"
        assert npz["modality"].shape == ()
        assert str(npz["modality"]) == "CT"
        assert npz["categories"].dtype == np.int32
        assert npz["categories"].tolist() == [1, 4]
    with zipfile.ZipFile(result.npz_path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_npz_window_matches_nifti_hu(ct_study, work_dir):
    result = convert_study(
        ct_study[0], work_dir, window_center=0.0, window_width=2000.0, **SMALL_GRID
    )

    hu_xyz = np.asanyarray(nib.load(result.image_path).dataobj).astype(np.float32)
    with np.load(result.npz_path) as npz:
        image_xyz = npz["image"].transpose(2, 1, 0)
    expected = np.clip((hu_xyz + 1000.0) / 2000.0, 0.0, 1.0)
    # The NIfTI contains rounded HU, so the window agrees to half a HU over the width.
    np.testing.assert_allclose(image_xyz, expected, atol=0.5 / 2000.0 + 1e-6)


def test_nifti_image_and_mask_share_the_npz_grid(ct_study, work_dir):
    result = convert_study(ct_study[0], work_dir, **SMALL_GRID)
    image = nib.load(result.image_path)
    with np.load(result.npz_path) as npz:
        mask_zyx = (npz["image"] > 0.9).astype(np.uint8)

    mask = nib.load(write_mask_nifti(mask_zyx, result.affine_ras, work_dir / "mask.nii.gz"))

    assert image.shape == (40, 48, 16)
    assert mask.shape == image.shape
    np.testing.assert_allclose(image.affine, result.affine_ras, atol=1e-5)
    np.testing.assert_array_equal(mask.affine, image.affine)
    # The mask covers the +1000 HU cube at LPS (4, -2, 10), which is RAS (-4, 2, 10).
    centroid = ras_centroid(np.asanyarray(mask.dataobj).transpose(2, 1, 0) > 0, mask.affine)
    np.testing.assert_allclose(centroid, [-4.0, 2.0, 10.0], atol=0.5)


def test_report_lists_candidates_and_output(ct_study, work_dir):
    result = convert_study(ct_study[0], work_dir, **SMALL_GRID)
    report = json.loads(result.report_path.read_text())

    assert report == result.report
    assert [s["reason_code"] for s in report["series"]] == [
        "localizer",
        "chosen_most_slices",
        "non_image",
    ]
    assert report["chosen_series_id"] == result.series_id
    assert report["output"]["shape_zyx"] == [16, 48, 40]
    assert report["output"]["native_shape_zyx"] == [12, 32, 30]
    assert report["output"]["modality"] == "CT"
    assert report["warnings"] == []


def test_warnings_name_members_by_index(make_zip, work_dir):
    members = series_members(build_series(SeriesSpec(slice_count=4)))
    members[3].data = members[3].data[:-300]  # the last slice, with truncated pixel data
    result = convert_study(make_zip(members), work_dir, **SMALL_GRID)

    assert [(w.code, w.member_index) for w in result.warnings] == [("member_truncated", 3)]
    assert result.report["warnings"][0]["member_index"] == 3
    assert "Member 3" in result.report["warnings"][0]["message"]
    assert result.slice_count == 3


def test_forced_series_is_converted(make_zip, work_dir):
    small = SeriesSpec(slice_count=4, series_number=7)
    large = SeriesSpec(slice_count=8, series_number=8)
    members = series_members(build_series(small), "A") + series_members(build_series(large), "B")
    zip_path = make_zip(members)
    default = convert_study(zip_path, work_dir / "default", **SMALL_GRID)
    small_id = next(s["series_id"] for s in default.report["series"] if s["series_number"] == 7)

    forced = convert_study(zip_path, work_dir / "forced", series_id=small_id, **SMALL_GRID)

    assert default.slice_count == 8
    assert forced.slice_count == 4
    assert forced.series_id == small_id
    assert forced.report["chosen_reason"]["code"] == "chosen_forced"


def test_mr_study_uses_percentile_window(make_zip, work_dir):
    members = series_members(build_series(mr_spec()))

    result = convert_study(make_zip(members), work_dir, **SMALL_GRID)

    assert result.modality == "MR"
    with np.load(result.npz_path) as npz:
        assert str(npz["modality"]) == "MR"
        assert npz["image"].min() == 0.0
        assert npz["image"].max() == 1.0
    assert result.report["output"]["window"] == {"kind": "percentile", "low": 1.0, "high": 99.0}


def test_outputs_carry_no_identifier_of_the_source(ct_study, work_dir):
    zip_path, datasets, members = ct_study
    result = convert_study(zip_path, work_dir, **SMALL_GRID)

    secrets = {PATIENT_NAME, "SILVA", PATIENT_ID, STUDY_DATE, BIRTH_DATE, ACCESSION_NUMBER}
    for ds in datasets:
        for element in ds.iterall():
            if element.VR == "UI":
                secrets.add(str(element.value))
    for member in members:
        secrets.add(member.name)
        secrets.update(part for part in member.name.split("/") if len(part) > 3)
    npz_bytes = result.npz_path.read_bytes()
    report_text = result.report_path.read_text()
    nifti_header = nib.load(result.image_path).header.binaryblock

    for secret in secrets:
        for encoding in ("ascii", "utf-16-le", "utf-32-le"):
            assert secret.encode(encoding) not in npz_bytes, secret
        assert secret not in report_text, secret
        assert secret.encode("ascii") not in nifti_header, secret


def test_uids_are_read_from_the_sources():
    datasets = build_series(SeriesSpec(slice_count=2))

    uids = {str(e.value) for ds in datasets for e in ds.iterall() if e.VR == "UI"}

    assert datasets[0].SeriesInstanceUID in uids
    assert datasets[0].SOPInstanceUID in uids
    assert isinstance(datasets[0], pydicom.Dataset)


def test_rejects_empty_target_grid(ct_study, work_dir):
    with pytest.raises(ValueError, match="target grid"):
        convert_study(ct_study[0], work_dir, target_hw=(0, 512))


def test_error_codes_are_stable_and_unique():
    codes = list(ERROR_CODES)

    assert len(codes) == len(set(codes))
    for code in (
        "archive_invalid",
        "archive_unsafe",
        "archive_too_large",
        "no_dicom_found",
        "no_usable_series",
        "series_not_found",
        "series_not_usable",
        "slice_gap",
        "inconsistent_geometry",
        "pixel_decode_failed",
        "unsupported_modality",
    ):
        assert code in ERROR_CODES
    assert all(code == code.lower() and " " not in code for code in codes)


def test_error_message_fills_params():
    error = PipelineError()

    assert error.code == "pipeline_error"
    assert error.params == {}
    assert str(error) == error.message
