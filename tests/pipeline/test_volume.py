"""Volume building on synthetic series: order, HU, padding, orientation, tilt, spacing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from portal.pipeline import (
    PixelDecodeFailed,
    SliceGap,
    choose_series,
    discover_series,
    load_volume,
    resample_to_shape,
)
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    AXIAL,
    CORONAL,
    SAGITTAL,
    SeriesSpec,
    ZipMember,
    build_series,
    cube_field,
    dicom_bytes,
    enhanced_multiframe,
    jpeg_lossless_with_damaged_frames,
    mr_spec,
    series_members,
    tilted_axial,
)
from tests.pipeline.truth import ras_centroid, sample_at_world


@pytest.fixture
def load(make_zip):
    """Return a function that zips datasets, discovers them and loads the chosen volume."""

    def load_datasets(datasets, series_id=None):
        index = discover_series(open_archive(make_zip(series_members(datasets))))
        candidate = choose_series(index, series_id) if series_id != "any" else index.candidates[0]
        warnings = []
        return load_volume(candidate, warnings), warnings

    return load_datasets


def _stored_pixel_points(spec, slice_indices=None):
    """Return the world positions (n, 3) and expected HU (n,) of stored pixels."""
    indices = range(spec.slice_count) if slice_indices is None else slice_indices
    points = np.concatenate([spec.pixel_world_lps(k).reshape(-1, 3) for k in indices])
    values = np.concatenate([spec.expected_hu(k).ravel() for k in indices])
    return points, values


def test_slices_sorted_by_position_not_instance_number(load):
    for order in ("reversed", "shuffled"):
        spec = SeriesSpec(instance_order=order, slice_count=7)
        volume, _ = load(build_series(spec))

        for k in range(spec.slice_count):
            np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))
        origin_ras = volume.affine_ras[:3, 3]
        np.testing.assert_allclose(origin_ras, np.array(spec.origin_lps) * [-1, -1, 1], atol=1e-5)


def test_slices_sorted_when_positions_descend(load):
    spec = SeriesSpec(steps_mm=-1.5, slice_count=5, origin_lps=(0.0, 0.0, 20.0))
    volume, _ = load(build_series(spec))

    assert volume.affine_ras[2, 2] == pytest.approx(1.5)
    np.testing.assert_array_equal(volume.hu_zyx[0], spec.expected_hu(4))
    np.testing.assert_array_equal(volume.hu_zyx[-1], spec.expected_hu(0))


def test_volume_attributes(load):
    spec = SeriesSpec(series_description="CHEST 1.0")
    volume, warnings = load(build_series(spec))

    assert volume.hu_zyx.dtype == np.int16
    assert volume.hu_zyx.shape == (10, 24, 20)
    assert volume.spacing_mm == pytest.approx((1.5, 0.9, 0.7))
    assert volume.modality == "CT"
    assert volume.series_description == "CHEST 1.0"
    assert volume.slice_count == 10
    assert not volume.was_resampled
    assert warnings == []


def test_uint16_with_intercept_gives_air_near_minus_1024(load):
    spec = SeriesSpec(encoding="uint16", hu_field=cube_field(), rescale_intercept=-1024.0)
    datasets = build_series(spec)
    assert datasets[0].pixel_array.dtype == np.uint16
    volume, _ = load(datasets)

    assert volume.hu_zyx.min() == pytest.approx(-1000.0)
    assert volume.hu_zyx.max() == pytest.approx(1000.0)
    assert np.median(volume.hu_zyx) == pytest.approx(-1000.0)


def test_bits_above_bits_stored_are_ignored(load):
    spec = SeriesSpec(encoding="uint16", hu_field=cube_field())
    datasets = build_series(spec)
    for ds in datasets:
        stored = ds.pixel_array | np.uint16(0xF000)  # overlay bits above the 12 stored bits
        ds.PixelData = stored.tobytes()
    volume, _ = load(datasets)

    assert volume.hu_zyx.max() == pytest.approx(1000.0)


def test_padding_value_becomes_air(load):
    spec = SeriesSpec(padding_value=-2000, padded_corner=5)
    volume, _ = load(build_series(spec))

    np.testing.assert_array_equal(volume.hu_zyx[:, :5, :5], -1024.0)
    assert volume.hu_zyx.min() == -1024.0
    np.testing.assert_array_equal(volume.hu_zyx[3], spec.expected_hu(3))


def test_rescale_slope_applied_in_float(load):
    spec = SeriesSpec(rescale_slope=0.5, rescale_intercept=-1000.0)
    volume, _ = load(build_series(spec))

    np.testing.assert_allclose(volume.hu_zyx[2], spec.expected_hu(2), atol=1e-4)


@pytest.mark.parametrize(
    ("orientation", "label"), [(AXIAL, "axial"), (SAGITTAL, "sagittal"), (CORONAL, "coronal")]
)
def test_native_geometry_matches_every_stored_pixel(load, orientation, label):
    spec = SeriesSpec(orientation=orientation)
    volume, _ = load(build_series(spec))
    points, expected = _stored_pixel_points(spec)

    values, inside = sample_at_world(volume.hu_zyx, volume.affine_ras, points)

    assert inside.all()
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_cube_phantom_lands_at_its_world_position(load):
    centre_lps = (3.0, -2.0, 9.0)
    spec = SeriesSpec(
        rows=40, columns=36, slice_count=20, steps_mm=1.0, hu_field=cube_field(centre_lps, 3.0)
    )
    volume, _ = load(build_series(spec))

    centroid = ras_centroid(volume.hu_zyx > 0, volume.affine_ras)
    np.testing.assert_allclose(centroid, [-3.0, 2.0, 9.0], atol=0.5)

    target, target_affine = resample_to_shape(volume.hu_zyx, volume.affine_ras, (32, 64, 48))
    centroid = ras_centroid(target > 0, target_affine)
    np.testing.assert_allclose(centroid, [-3.0, 2.0, 9.0], atol=0.5)


def test_gantry_tilt_resampled_onto_orthogonal_grid(load):
    tilt_deg = 20.0
    spec = SeriesSpec(
        orientation=tilted_axial(tilt_deg), table_direction=(0.0, 0.0, 1.0), steps_mm=2.0
    )
    volume, warnings = load(build_series(spec))

    assert volume.was_resampled
    assert volume.tilt_deg == pytest.approx(tilt_deg, abs=0.01)
    assert [w.code for w in warnings] == ["slices_resampled"]
    assert volume.spacing_mm[0] == pytest.approx(2.0 * np.cos(np.radians(tilt_deg)), rel=1e-5)
    assert volume.hu_zyx.shape[0] == spec.slice_count
    assert volume.hu_zyx.shape[1] > spec.rows  # the union of the sheared fields of view
    np.testing.assert_allclose(
        np.linalg.norm(volume.affine_ras[:3, :3], axis=0), [0.7, 0.9, volume.spacing_mm[0]]
    )
    # The affine's axes are orthogonal: no shear is left for a viewer to ignore.
    gram = volume.affine_ras[:3, :3].T @ volume.affine_ras[:3, :3]
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-9)

    points, expected = _stored_pixel_points(spec)
    values, inside = sample_at_world(volume.hu_zyx, volume.affine_ras, points, margin=1.0)
    interior = inside & _interior_pixels(spec)
    assert interior.mean() > 0.5
    np.testing.assert_allclose(values[interior], expected[interior], atol=1.0)


def test_uneven_spacing_resampled_at_median_step(load):
    steps = [1.0, 1.0, 1.5, 1.0, 1.2, 1.0, 1.0, 1.9, 1.0]
    spec = SeriesSpec(steps_mm=steps)
    volume, warnings = load(build_series(spec))

    assert volume.was_resampled
    assert volume.spacing_mm[0] == pytest.approx(1.0)
    assert volume.hu_zyx.shape == (int(round(sum(steps))) + 1, 24, 20)
    assert warnings[0].code == "slices_resampled"
    assert warnings[0].params["max_step_mm"] == pytest.approx(1.9)

    points, expected = _stored_pixel_points(spec)
    values, inside = sample_at_world(volume.hu_zyx, volume.affine_ras, points)
    assert inside.all()
    np.testing.assert_allclose(values, expected, atol=1.0)


def test_target_grid_matches_stored_pixels(load):
    spec = SeriesSpec(orientation=tilted_axial(12.0), table_direction=(0.0, 0.0, 1.0))
    volume, _ = load(build_series(spec))
    target, target_affine = resample_to_shape(volume.hu_zyx, volume.affine_ras, (16, 32, 32))
    points, expected = _stored_pixel_points(spec)

    values, inside = sample_at_world(target, target_affine, points, margin=1.0)
    # Target voxels blend neighbouring native slices, whose sheared coverage ends up to two
    # rows away from this slice's edge.
    interior = inside & _interior_pixels(spec, border=2)

    assert interior.mean() > 0.3
    np.testing.assert_allclose(values[interior], expected[interior], atol=2.0)


def test_gap_over_twice_median_raises(load):
    spec = SeriesSpec(slice_count=6, steps_mm=[1.0, 1.0, 2.6, 1.0, 1.0])

    with pytest.raises(SliceGap) as caught:
        load(build_series(spec), series_id="any")

    assert caught.value.code == "slice_gap"
    assert caught.value.params["gap_mm"] == pytest.approx(2.6)


def test_gap_of_exactly_twice_median_is_interpolated(load):
    spec = SeriesSpec(slice_count=6, steps_mm=[1.0, 1.0, 2.0, 1.0, 1.0])

    volume, _ = load(build_series(spec))

    assert volume.hu_zyx.shape[0] == 7


def test_identical_copy_at_one_position_is_dropped(load):
    datasets = build_series(SeriesSpec(slice_count=5))
    copy = build_series(SeriesSpec(slice_count=5, series_uid=datasets[0].SeriesInstanceUID))[2]

    volume, warnings = load(datasets + [copy])

    assert volume.hu_zyx.shape[0] == 5
    assert [(w.code, w.member_index) for w in warnings] == [("duplicate_slice_dropped", 5)]


def test_different_images_at_one_position_keep_first(load):
    # No header value tells the two images apart, so the first by Instance Number is kept.
    spec = SeriesSpec(slice_count=5)
    datasets = build_series(spec)
    other = build_series(
        SeriesSpec(slice_count=5, series_uid=datasets[0].SeriesInstanceUID, hu_field=cube_field())
    )[2]
    other.InstanceNumber = 99

    volume, warnings = load(datasets + [other])

    assert volume.hu_zyx.shape[0] == 5
    np.testing.assert_array_equal(volume.hu_zyx[2], spec.expected_hu(2))
    assert [(w.code, w.params) for w in warnings] == [
        ("repeated_positions_first_volume", {"position_count": 1})
    ]


def test_mr_keeps_rescaled_stored_values(load):
    spec = mr_spec(rescale_slope=2.0)
    volume, _ = load(build_series(spec))

    assert volume.modality == "MR"
    for k in (0, 4):
        np.testing.assert_allclose(volume.hu_zyx[k], spec.expected_hu(k))
    assert volume.hu_zyx.min() > 400


def test_mr_sagittal_geometry(load):
    spec = mr_spec(orientation=SAGITTAL, rows=16, columns=18, slice_count=12)
    volume, _ = load(build_series(spec))
    points, expected = _stored_pixel_points(spec)

    values, _ = sample_at_world(volume.hu_zyx, volume.affine_ras, points)

    np.testing.assert_allclose(values, expected, atol=1e-3)


def _interior_pixels(spec: SeriesSpec, border: int = 1) -> np.ndarray:
    """Return a mask, in `_stored_pixel_points` order, of pixels off the slice borders.

    Near its border, a tilted slice's neighbours do not cover the same region. Values there
    mix in the fill of the uncovered region, so only interior pixels must match.
    """
    interior = np.zeros((spec.rows, spec.columns), dtype=bool)
    interior[border:-border, border:-border] = True
    return np.tile(interior.ravel(), spec.slice_count)


def test_replace_keeps_spec_defaults():
    spec = replace(SeriesSpec(), slice_count=3)

    assert spec.positions_lps().shape == (3, 3)


def test_files_without_preamble_decode(make_zip, tmp_path):
    spec = SeriesSpec(slice_count=4)
    members = series_members(build_series(spec), suffix=".IMA", preamble=False)
    index = discover_series(open_archive(make_zip(members)))

    volume = load_volume(choose_series(index))

    for k in range(spec.slice_count):
        np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))


def test_enhanced_multiframe_uses_functional_groups(make_zip, tmp_path):
    spec = SeriesSpec(orientation=CORONAL, rescale_slope=0.5, rescale_intercept=-1000.0)
    member = ZipMember("S/ENHANCED", dicom_bytes(enhanced_multiframe(spec)))
    index = discover_series(open_archive(make_zip([member])))

    volume = load_volume(choose_series(index))

    assert index.candidates[0].slice_count == spec.slice_count
    points, expected = _stored_pixel_points(spec)
    values, inside = sample_at_world(volume.hu_zyx, volume.affine_ras, points)
    assert inside.all()
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_single_frame_enhanced_object_decodes(make_zip, tmp_path):
    spec = SeriesSpec(slice_count=2)
    members = [
        ZipMember(
            f"S/FRAME{k}",
            dicom_bytes(
                enhanced_multiframe(
                    replace(spec, slice_count=1, origin_lps=tuple(spec.positions_lps()[k]))
                )
            ),
        )
        for k in range(2)
    ]
    index = discover_series(open_archive(make_zip(members)))

    volume = load_volume(choose_series(index))

    np.testing.assert_array_equal(volume.hu_zyx[1], spec.expected_hu(1))


def test_undecodable_pixel_data_raises(load):
    datasets = jpeg_lossless_with_damaged_frames(SeriesSpec(slice_count=4))

    with pytest.raises(PixelDecodeFailed) as caught:
        load(datasets)

    assert caught.value.code == "pixel_decode_failed"
    assert caught.value.params["member_index"] in range(4)
    assert "JPEG Lossless" in caught.value.params["transfer_syntax"]
