"""Validation of input NPZ files before a job is accepted."""

import zipfile

import numpy as np
import pytest

from segmenter.volume import InvalidVolume, load_volume
from tests.segmenter.phantoms import make_chest_phantom
from tests.segmenter.volumes import write_input_npz

KNOWN_LABELS = {1, 2, 3, 4, 5}


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((6, 24, 32))


def load(path, max_voxels=10**6):
    return load_volume(path, max_voxels=max_voxels, known_labels=KNOWN_LABELS)


def test_valid_volume_loads(phantom, tmp_path):
    path = write_input_npz(tmp_path / "v.npz", phantom, modality="MR", categories=(5, 1))

    volume = load(path)

    assert volume.image.shape == phantom.image.shape
    assert volume.modality == "MR"
    assert volume.categories == (1, 5)
    assert volume.spacing_mm.tolist() == pytest.approx([2.5, 1.5, 1.5])


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"spacing_mm": None}, "missing_key"),
        ({"patient_name": np.str_("SILVA^MARIA")}, "unexpected_key"),
        ({"image": np.zeros((6, 24, 32), np.float64)}, "invalid_dtype"),
        ({"image": np.zeros((24, 32), np.float32)}, "invalid_shape"),
        ({"image": np.zeros((0, 24, 32), np.float32)}, "invalid_shape"),
        ({"image": np.full((6, 24, 32), 2.0, np.float32)}, "invalid_value"),
        ({"image": np.full((6, 24, 32), np.nan, np.float32)}, "invalid_value"),
        ({"spacing_mm": np.array([1.0, 1.0], np.float32)}, "invalid_shape"),
        ({"spacing_mm": np.array([1.0, 0.0, 1.0], np.float32)}, "invalid_value"),
        ({"spacing_mm": np.array([1.0, 1.0, 1.0], np.float64)}, "invalid_dtype"),
        ({"modality": np.array(["CT", "MR"])}, "invalid_dtype"),
        ({"modality": np.array(3)}, "invalid_dtype"),
        ({"categories": np.array([1, 2], np.int64)}, "invalid_dtype"),
        ({"categories": np.array([[1, 2]], np.int32)}, "invalid_shape"),
        ({"categories": np.array([1, 9], np.int32)}, "unknown_category"),
        ({"categories": np.array([1, 1], np.int32)}, "invalid_value"),
        ({"categories": np.array([1, None], dtype=object)}, "pickle_not_allowed"),
    ],
)
def test_invalid_volume_code(phantom, tmp_path, overrides, code):
    path = write_input_npz(tmp_path / "v.npz", phantom, overrides=overrides)

    with pytest.raises(InvalidVolume) as caught:
        load(path)

    assert caught.value.code == code


def test_oversize_image_rejected(phantom, tmp_path):
    path = write_input_npz(tmp_path / "v.npz", phantom)

    with pytest.raises(InvalidVolume) as caught:
        load(path, max_voxels=phantom.image.size - 1)

    assert caught.value.code == "volume_too_large"


def test_compressed_npz_rejected(phantom, tmp_path):
    path = tmp_path / "v.npz"
    np.savez_compressed(
        path,
        image=phantom.image,
        spacing_mm=phantom.spacing_mm,
        modality=np.str_("CT"),
        categories=np.array([], np.int32),
    )

    with pytest.raises(InvalidVolume) as caught:
        load(path)

    assert caught.value.code == "compressed_npz"


def test_not_a_zip_rejected(tmp_path):
    path = tmp_path / "v.npz"
    path.write_bytes(b"\x93NUMPY not an archive")

    with pytest.raises(InvalidVolume) as caught:
        load(path)

    assert caught.value.code == "invalid_npz"


def test_duplicate_member_rejected(phantom, tmp_path):
    path = write_input_npz(tmp_path / "v.npz", phantom)
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("image.npy", b"second copy")

    with pytest.raises(InvalidVolume) as caught:
        load(path)

    assert caught.value.code == "unexpected_key"
