"""The CT segmentation on synthetic phantoms, without the HTTP service."""

import numpy as np
import pytest
from scipy import ndimage

from segmenter.catalogue import load_label_values
from segmenter.ct import fill_holes_per_slice, segment_ct
from tests.segmenter.phantoms import make_chest_phantom, window_ct

LABEL_VALUES = load_label_values()


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom()


@pytest.fixture(scope="module")
def full_mask(phantom):
    return segment_ct(phantom.image, phantom.spacing_mm, LABEL_VALUES)


def core_share(mask, region, label) -> float:
    return float(np.mean(mask[ndimage.binary_erosion(region)] == label))


def test_same_input_same_mask(phantom, full_mask):
    again = segment_ct(phantom.image.copy(), phantom.spacing_mm.copy(), LABEL_VALUES)

    assert np.array_equal(again, full_mask)


def test_regions_get_their_labels(phantom, full_mask):
    assert full_mask.dtype == np.uint8
    assert full_mask.shape == phantom.image.shape
    assert core_share(full_mask, phantom.lungs, LABEL_VALUES["lung"]) > 0.99
    assert core_share(full_mask, phantom.airway, LABEL_VALUES["airway"]) > 0.95
    assert core_share(full_mask, phantom.adipose, LABEL_VALUES["adipose_tissue"]) > 0.95
    assert core_share(full_mask, phantom.soft_tissue, LABEL_VALUES["soft_tissue"]) > 0.95
    assert core_share(full_mask, phantom.bone, LABEL_VALUES["bone"]) > 0.99
    assert core_share(full_mask, phantom.outside, 0) > 0.99


def test_noisy_phantom_keeps_fat():
    # Noise of 30 HU puts about 9 % of -100 HU fat voxels below the -140 HU dark threshold.
    noisy = make_chest_phantom(noise_hu=30.0, seed=11)
    mask = segment_ct(noisy.image, noisy.spacing_mm, LABEL_VALUES)

    assert core_share(mask, noisy.adipose, LABEL_VALUES["adipose_tissue"]) > 0.9
    assert core_share(mask, noisy.soft_tissue, LABEL_VALUES["soft_tissue"]) > 0.99
    assert core_share(mask, noisy.lungs, LABEL_VALUES["lung"]) > 0.99
    assert core_share(mask, noisy.bone, LABEL_VALUES["bone"]) > 0.99
    assert core_share(mask, noisy.outside, 0) > 0.99


def test_airway_not_labelled_lung(phantom, full_mask):
    airway_values = full_mask[ndimage.binary_erosion(phantom.airway)]

    assert not np.any(airway_values == LABEL_VALUES["lung"])


@pytest.mark.parametrize("key", sorted(LABEL_VALUES))
def test_only_requested_label_written(phantom, full_mask, key):
    value = LABEL_VALUES[key]
    mask = segment_ct(phantom.image, phantom.spacing_mm, {key: value})

    assert set(np.unique(mask).tolist()) == {0, value}
    assert np.array_equal(mask == value, full_mask == value)


def test_empty_request_writes_nothing(phantom):
    mask = segment_ct(phantom.image, phantom.spacing_mm, {})

    assert not mask.any()


def test_air_only_volume_empty_mask():
    image = window_ct(np.full((8, 32, 32), -1000.0, dtype=np.float32))
    mask = segment_ct(image, np.array([2.0, 1.0, 1.0], np.float32), LABEL_VALUES)

    assert not mask.any()


def test_progress_rises_to_90(phantom):
    reported = []
    segment_ct(phantom.image, phantom.spacing_mm, LABEL_VALUES, on_progress=reported.append)

    assert reported == sorted(reported)
    assert reported[-1] == 90


def test_progress_callback_can_stop(phantom):
    class Stop(Exception):
        pass

    def stop(percent):
        raise Stop

    with pytest.raises(Stop):
        segment_ct(phantom.image, phantom.spacing_mm, LABEL_VALUES, on_progress=stop)


def test_fill_holes_covers_first_and_last_slice():
    ring = np.zeros((3, 9, 9), dtype=bool)
    ring[:, 2:7, 2:7] = True
    ring[:, 4, 4] = False

    filled = fill_holes_per_slice(ring)

    assert filled[:, 4, 4].all()
    assert not filled[:, 0, 0].any()
