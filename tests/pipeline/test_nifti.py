"""NIfTI writers: dtype, intent, qform == sform, shared grid of image and mask."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from portal.pipeline import ras_affine_from_lps, write_image_nifti, write_mask_nifti


@pytest.fixture
def affine_ras():
    """An oblique, LPS-derived affine with anisotropic spacing."""
    angle = np.radians(15.0)
    row = np.array([1.0, 0.0, 0.0])
    column = np.array([0.0, np.cos(angle), -np.sin(angle)])
    return ras_affine_from_lps(
        (-120.0, -80.0, 40.0), row, column, np.cross(row, column), (2.5, 0.6, 0.5)
    )


def test_ras_affine_negates_lps_x_and_y():
    affine = ras_affine_from_lps(
        (10.0, 20.0, 30.0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (3.0, 2.0, 1.0)
    )

    np.testing.assert_allclose(
        affine,
        [[-1.0, 0, 0, -10.0], [0, -2.0, 0, -20.0], [0, 0, 3.0, 30.0], [0, 0, 0, 1]],
    )


def test_image_is_int16_hu_in_xyz_order(tmp_path, affine_ras):
    hu_zyx = np.zeros((3, 4, 5), dtype=np.float32)
    hu_zyx[2, 1, 4] = 41.6
    hu_zyx[0, 0, 0] = -40000.0
    hu_zyx[0, 0, 1] = 99999.0

    image = nib.load(write_image_nifti(hu_zyx, affine_ras, tmp_path / "image.nii.gz"))

    assert image.get_data_dtype() == np.int16
    assert image.shape == (5, 4, 3)
    data = np.asanyarray(image.dataobj)
    assert data.dtype == np.int16
    assert data[4, 1, 2] == 42
    assert data[0, 0, 0] == -32768
    assert data[1, 0, 0] == 32767
    assert image.dataobj.slope == 1.0
    assert image.dataobj.inter == 0.0


def test_image_qform_equals_sform(tmp_path, affine_ras):
    image = nib.load(write_image_nifti(np.zeros((3, 4, 5)), affine_ras, tmp_path / "i.nii.gz"))
    header = image.header

    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    assert qform_code == 1
    assert sform_code == 1
    np.testing.assert_allclose(qform, sform, atol=1e-5)
    np.testing.assert_allclose(sform, affine_ras, atol=1e-5)
    assert header.get_xyzt_units()[0] == "mm"


def test_mask_has_label_intent_and_uint8(tmp_path, affine_ras):
    mask_zyx = np.zeros((3, 4, 5), dtype=np.int64)
    mask_zyx[1, 2, 3] = 5

    image = nib.load(write_mask_nifti(mask_zyx, affine_ras, tmp_path / "mask.nii.gz"))

    assert image.get_data_dtype() == np.uint8
    assert image.header["intent_code"] == 1002
    assert image.header.get_intent()[0] == "label"
    assert image.header["intent_name"].tobytes().rstrip(b"\0") == b"label"
    assert np.asanyarray(image.dataobj)[3, 2, 1] == 5


def test_image_and_mask_share_grid(tmp_path, affine_ras):
    image = nib.load(write_image_nifti(np.zeros((3, 4, 5)), affine_ras, tmp_path / "i.nii.gz"))
    mask = nib.load(
        write_mask_nifti(np.zeros((3, 4, 5), np.uint8), affine_ras, tmp_path / "m.nii.gz")
    )

    assert image.shape == mask.shape
    np.testing.assert_array_equal(image.affine, mask.affine)
    np.testing.assert_array_equal(image.header.get_qform(), mask.header.get_qform())


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((3, 4)), "3D"),
        (np.zeros((3, 4, 5), dtype=np.float32), "integer"),
        (np.full((3, 4, 5), 300), "0..255"),
        (np.full((3, 4, 5), -1), "0..255"),
    ],
)
def test_mask_writer_rejects_non_labels(tmp_path, affine_ras, mask, message):
    with pytest.raises(ValueError, match=message):
        write_mask_nifti(mask, affine_ras, tmp_path / "m.nii.gz")
