"""Native output, 4D splits, LUTs, patients and studies, header checks and slab averaging."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from portal.pipeline import (
    MultiplePatients,
    average_slabs,
    choose_series,
    convert_study,
    discover_series,
    load_volume,
    resample_to_shape,
    write_native_mask,
)
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    SAGITTAL,
    UID_ROOT,
    SeriesSpec,
    build_series,
    cube_field,
    enhanced_multiframe,
    series_members,
    tilted_axial,
)
from tests.pipeline.truth import ras_centroid, sample_at_world

SMALL_GRID = {"target_hw": (16, 16), "target_slices": 6}


def _native_zyx(path):
    image = nib.load(path)
    return np.asanyarray(image.dataobj).transpose(2, 1, 0), image.affine


def _assert_native_matches_stored(spec, native_zyx, affine, margin=0.0, border=0):
    inner = np.s_[border : spec.rows - border, border : spec.columns - border]
    slices = range(spec.slice_count)
    world = np.concatenate([spec.pixel_world_lps(k)[inner].reshape(-1, 3) for k in slices])
    expected = np.concatenate([spec.expected_hu(k)[inner].reshape(-1) for k in slices])
    values, inside = sample_at_world(native_zyx, affine, world, margin=margin)

    assert inside.mean() > 0.5
    np.testing.assert_allclose(values[inside], expected[inside], atol=0.51)


@pytest.mark.parametrize(
    "spec",
    [
        SeriesSpec(instance_order="shuffled"),
        SeriesSpec(orientation=SAGITTAL, rows=20, columns=18),
        SeriesSpec(orientation=(0.8, 0.6, 0.0, -0.36, 0.48, 0.8), slice_count=8),
        SeriesSpec(orientation=tilted_axial(15.0), table_direction=(0.0, 0.0, 1.0)),
        SeriesSpec(steps_mm=[1.5, 1.5, 2.0, 1.5, 1.0, 1.5, 1.5, 1.5, 1.5]),
    ],
    ids=["shuffled", "sagittal", "oblique", "tilted", "uneven"],
)
def test_native_matches_every_stored_pixel(make_zip, work_dir, spec):
    result = convert_study(make_zip(series_members(build_series(spec))), work_dir, **SMALL_GRID)
    native_zyx, affine = _native_zyx(result.native_path)

    assert result.native_path == work_dir / "native.nii.gz"
    np.testing.assert_allclose(affine, result.native_affine_ras, atol=1e-4)
    # Sheared slices leave air at the edges of the common canvas, where the interpolation
    # along the normal blends data with air, so the outer voxels and pixels are left out.
    _assert_native_matches_stored(spec, native_zyx, affine, margin=1.0, border=2)


def test_native_of_enhanced_multiframe(make_zip, work_dir):
    spec = SeriesSpec(slice_count=7)
    result = convert_study(
        make_zip(series_members([enhanced_multiframe(spec)])), work_dir, **SMALL_GRID
    )
    native_zyx, affine = _native_zyx(result.native_path)

    assert native_zyx.dtype == np.int16
    _assert_native_matches_stored(spec, native_zyx, affine)


def test_regular_stack_is_streamed_as_int16(make_zip):
    spec = SeriesSpec(slice_count=6)
    index = discover_series(open_archive(make_zip(series_members(build_series(spec)))))

    class Recorder:
        def __init__(self):
            self.slices = []

        def start(self, shape_zyx, dtype, affine_ras):
            self.shape, self.dtype = shape_zyx, dtype

        def write_slice(self, slice_yx):
            self.slices.append(np.array(slice_yx))

        def abort(self):
            self.slices = None

    recorder = Recorder()
    volume = load_volume(choose_series(index), sink=recorder)

    assert volume.streamed
    assert recorder.shape == (6, 24, 20)
    assert recorder.dtype == np.int16
    np.testing.assert_array_equal(np.stack(recorder.slices), volume.hu_zyx)


def test_native_skipped_over_limit(make_zip, work_dir):
    spec = SeriesSpec(slice_count=6)
    result = convert_study(
        make_zip(series_members(build_series(spec))), work_dir, native_max_bytes=100, **SMALL_GRID
    )

    assert result.native_path is None
    assert not (work_dir / "native.nii.gz").exists()
    assert [w.code for w in result.warnings] == ["native_too_large"]
    assert result.report["output"]["native_written"] is False


def test_native_mask_nearest_neighbour(make_zip, work_dir):
    spec = SeriesSpec(
        rows=32, columns=30, slice_count=12, hu_field=cube_field((4.0, -2.0, 8.0), 3.0)
    )
    result = convert_study(make_zip(series_members(build_series(spec))), work_dir, **SMALL_GRID)
    with np.load(result.npz_path) as npz:
        mask_zyx = np.where(npz["image"] > 0.9, 3, 0).astype(np.uint8)
    mask_zyx[0, 0, 0] = 7

    path = write_native_mask(
        mask_zyx, result.affine_ras, result.native_path, work_dir / "mask_native.nii.gz"
    )
    mask = nib.load(path)
    native = nib.load(result.native_path)
    values = np.asanyarray(mask.dataobj).transpose(2, 1, 0)

    assert mask.shape == native.shape
    np.testing.assert_array_equal(mask.affine, native.affine)
    assert mask.header.get_intent()[0] == "label"
    assert set(np.unique(values)) == {0, 3, 7}  # labels only, never a blend
    np.testing.assert_allclose(ras_centroid(values == 3, mask.affine), [-4.0, 2.0, 8.0], atol=1.0)


def test_four_d_split_by_echo_number(make_zip):
    uid = generate_uid(prefix=UID_ROOT)
    first = build_series(SeriesSpec(slice_count=5, series_uid=uid))
    second = build_series(SeriesSpec(slice_count=5, series_uid=uid, hu_field=cube_field()))
    for echo, datasets in ((1, first), (2, second)):
        for ds in datasets:
            ds.EchoNumbers = echo
    index = discover_series(open_archive(make_zip(series_members(first + second))))
    chosen = choose_series(index)

    assert [(c.volume_number, c.volume_count) for c in index.candidates] == [(1, 2), (2, 2)]
    assert [c.reason_code for c in index.candidates] == ["chosen_most_slices", "other_4d_volume"]
    assert chosen is index.candidates[0]
    forced = choose_series(index, index.candidates[1].series_id)
    volume = load_volume(forced)
    assert volume.hu_zyx.shape == (5, 24, 20)
    assert volume.hu_zyx.max() == 1000


def test_modality_lut_sequence_applied(make_zip):
    spec = SeriesSpec(slice_count=4, hu_field=lambda world: np.full(world.shape[:-1], 5.0))
    datasets = build_series(spec)
    for ds in datasets:
        item = Dataset()
        # The table starts at stored value 1000 and maps stored value v to 2 * v + 7.
        item.LUTDescriptor = [3000, 1000, 16]
        table = np.array([2 * value + 7 for value in range(1000, 4000)], dtype=np.uint16)
        item.add_new(0x00283006, "OW", table.tobytes())
        item.ModalityLUTType = "HU"
        ds.ModalityLUTSequence = [item]
        del ds.RescaleSlope, ds.RescaleIntercept
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    volume = load_volume(choose_series(index))

    # Stored value is 5 + 1024 = 1029, which the LUT maps to 2 * 1029 + 7 = 2065.
    assert np.all(volume.hu_zyx == 2065)


def test_two_patients_rejected(make_zip):
    one = build_series(SeriesSpec(slice_count=3))
    other = build_series(SeriesSpec(slice_count=3))
    for ds in other:
        ds.PatientID = "PID-00002"

    with pytest.raises(MultiplePatients) as caught:
        discover_series(open_archive(make_zip(series_members(one + other))))

    assert caught.value.code == "multiple_patients"
    assert caught.value.params == {"patient_count": 2}


def test_other_study_reported(make_zip, work_dir):
    main = build_series(SeriesSpec(slice_count=8))
    earlier = build_series(SeriesSpec(slice_count=4, series_number=5, study_uid=UID_ROOT + "77"))
    result = convert_study(make_zip(series_members(earlier + main)), work_dir, **SMALL_GRID)

    reasons = {s["series_number"]: s["reason_code"] for s in result.report["series"]}
    assert reasons == {2: "chosen_most_slices", 5: "other_study"}
    assert [(w.code, w.params) for w in result.warnings] == [("other_studies", {"study_count": 2})]


def test_mosaic_rejected_with_reason(make_zip):
    datasets = build_series(
        SeriesSpec(slice_count=3, image_type=("ORIGINAL", "PRIMARY", "M", "MOSAIC"))
    )
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    assert [c.reason_code for c in index.candidates] == ["mosaic"]


def test_signed_garbage_high_bits_and_monochrome1(make_zip):
    spec = SeriesSpec(slice_count=4)
    datasets = build_series(spec)
    for k, ds in enumerate(datasets):
        stored = spec.stored_values(k)
        # 12 bits stored, sign bit 11; bits 12 to 15 hold garbage.
        garbage = (stored.astype(np.int32) & 0x0FFF) | 0x5000
        ds.PixelData = garbage.astype(np.uint16).astype(np.int16).tobytes()
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PhotometricInterpretation = "MONOCHROME1"
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    volume = load_volume(choose_series(index))

    for k in range(4):
        np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))


def test_huge_declared_image_skipped_before_decoding(make_zip, work_dir):
    datasets = build_series(SeriesSpec(slice_count=5))
    bogus = build_series(SeriesSpec(slice_count=1, series_number=9))[0]
    bogus.Rows, bogus.Columns, bogus.NumberOfFrames = 65535, 65535, 10000
    members = series_members(datasets) + series_members([bogus], "P/BIG")

    result = convert_study(make_zip(members), work_dir, **SMALL_GRID)

    assert [(w.code, w.member_index) for w in result.warnings] == [("member_pixel_data_size", 5)]
    assert result.slice_count == 5


def test_invalid_values_do_not_skip_file(make_zip, work_dir):
    spec = SeriesSpec(slice_count=4)
    datasets = build_series(spec)
    raw_spacing = "0.900000,0.700000"
    for ds in datasets:
        ds.InstanceNumber = None
        ds.add_new(0x00200013, "IS", None)
        ds["InstanceNumber"]._value = "2.5"
        ds.add_new(0x00280030, "DS", None)
        ds["PixelSpacing"]._value = raw_spacing
    result = convert_study(make_zip(series_members(datasets)), work_dir, **SMALL_GRID)

    assert result.slice_count == 4
    assert result.report["output"]["native_spacing_mm_zyx"] == [1.5, 0.9, 0.7]


def test_slab_average_uses_every_slice():
    volume = np.arange(12, dtype=np.float32).reshape(12, 1, 1) ** 2

    averaged = average_slabs(volume, 0, 4)

    expected = [np.mean(np.arange(3 * o, 3 * o + 3) ** 2) for o in range(4)]
    np.testing.assert_allclose(averaged[:, 0, 0], expected, rtol=1e-6)
    # A thin bright slice is kept as a third of its value, not skipped.
    spike = np.zeros((12, 2, 2), dtype=np.int16)
    spike[4] = 300
    resampled, _ = resample_to_shape(spike, np.eye(4), (4, 2, 2))
    np.testing.assert_allclose(resampled[:, 0, 0], [0, 100, 0, 0])


def test_inspect_cli_keys_and_series_flag(make_zip, tmp_path):
    thin = build_series(SeriesSpec(slice_count=8))
    thick = build_series(replace(SeriesSpec(slice_count=3, steps_mm=5.0, series_number=3)))
    zip_path = make_zip(series_members(thin + thick))

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "portal.pipeline", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    report = json.loads(run("inspect", str(zip_path)).stdout)
    assert report["error"] is None
    assert report["warnings"] == []
    keys = {"series_id", "series_number", "modality", "description", "slices", "chosen", "reason"}
    assert all(keys <= set(series) for series in report["series"])
    thick_id = next(s["series_id"] for s in report["series"] if s["series_number"] == 3)

    completed = run("convert", str(zip_path), "--out", str(tmp_path / "out"), "--series", thick_id)

    assert completed.returncode == 0, completed.stderr
    native = nib.load(tmp_path / "out" / "native.nii.gz")
    assert native.shape == (20, 24, 3)
