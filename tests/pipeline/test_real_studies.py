"""The three real studies: slice order, HU, reference masks, tilt, compressed MR."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest

from portal.pipeline import (
    choose_series,
    convert_study,
    discover_series,
    load_volume,
    resample_to_shape,
)
from portal.pipeline.volume import Volume, decoding_plugin
from tests.pipeline.archives import open_archive
from tests.pipeline.truth import LPS_TO_RAS, sample_at_world, stored_pixels

CHEST_REFERENCE = "ct_chest_3slice_with_reference_segmentations"
MR_REFERENCE = "mr_t1_3d_jpeg_lossless_and_j2k_fragmented"
MR_5001_VOXEL_SUM = 244512957


@dataclass
class LoadedSeries:
    """A series loaded by the pipeline, with the extracted files it came from."""

    volume: Volume
    paths: list[Path]
    warnings: list
    report_series: list[dict]
    chosen_number: int | None


def _load_series(zip_path: Path, folder: Path, series_number: int | None = None) -> LoadedSeries:
    index = discover_series(open_archive(zip_path))
    series_id = None
    if series_number is not None:
        series_id = next(c.series_id for c in index.candidates if c.series_number == series_number)
    candidate = choose_series(index, series_id)
    warnings: list = []
    volume = load_volume(candidate, warnings)
    return LoadedSeries(
        volume=volume,
        paths=_write_members(candidate, folder),
        warnings=warnings,
        report_series=[c.to_report() for c in index.candidates],
        chosen_number=candidate.series_number,
    )


def _write_members(candidate, folder: Path) -> list[Path]:
    """Write the candidate's members to the test's folder, so the truth reads raw files."""
    folder.mkdir(parents=True, exist_ok=True)
    members = {header.member_index: header.member for header in candidate.slices}
    paths = []
    for index in sorted(members):
        path = folder / f"{index:06d}"
        path.write_bytes(members[index].read_bytes())
        paths.append(path)
    return paths


# Chest CT: 3 axial slices, InstanceNumber opposite to z, reference masks.


@pytest.fixture(scope="module")
def chest(chest_zip, tmp_path_factory) -> LoadedSeries:
    return _load_series(chest_zip, tmp_path_factory.mktemp("chest"))


@pytest.fixture(scope="module")
def chest_conversion(chest_zip, tmp_path_factory):
    return convert_study(chest_zip, tmp_path_factory.mktemp("chest_out"))


def test_chest_slices_ordered_by_position(chest):
    by_instance = {}
    for path in chest.paths:
        ds = pydicom.dcmread(path)
        by_instance[int(ds.InstanceNumber)] = (float(ds.ImagePositionPatient[2]), ds)

    assert [by_instance[n][0] for n in (1, 2, 3)] == pytest.approx([-126.69, -127.69, -128.69])
    for z_index, instance in enumerate((3, 2, 1)):
        ds = by_instance[instance][1]
        expected = ds.pixel_array.astype(np.float32) - 1024.0
        expected[ds.pixel_array == -2000] = -1024.0
        np.testing.assert_array_equal(chest.volume.hu_zyx[z_index], expected)
    assert chest.volume.affine_ras[2, 3] == pytest.approx(-128.69, abs=1e-4)
    assert chest.volume.spacing_mm == pytest.approx((1.0, 0.810547, 0.810547), abs=1e-5)


def test_chest_hu_values(chest):
    hu = chest.volume.hu_zyx

    assert hu.min() == -1024.0  # padding (-2000 stored) became air, not -3024
    assert hu.max() == 2405.0 - 1024.0
    assert np.count_nonzero(hu[0] == -1024.0) >= 55772


def test_chest_native_grid_matches_every_stored_pixel(chest):
    points, expected = stored_pixels(chest.paths)

    values, inside = sample_at_world(chest.volume.hu_zyx, chest.volume.affine_ras, points)

    assert inside.all()
    np.testing.assert_allclose(values, expected, atol=1e-3)


def test_chest_target_grid_matchesstored_pixels(chest, chest_conversion):
    image = nib.load(chest_conversion.image_path)
    hu_zyx = np.asanyarray(image.dataobj).transpose(2, 1, 0).astype(np.float32)
    points, expected = stored_pixels(chest.paths, per_slice=20000)

    values, inside = sample_at_world(hu_zyx, image.affine, points, margin=1.0)
    errors = np.abs(values - expected)[inside]

    assert inside.mean() > 0.95
    assert np.median(errors) < 2.0
    assert np.corrcoef(values[inside], expected[inside])[0, 1] > 0.99


def _mask_on_grid(nrrd_path: Path, affine_ras: np.ndarray, shape_zyx) -> np.ndarray:
    """Resample an LPS NRRD mask onto a (z, y, x) grid by nearest neighbour, via the affines."""
    data, header = nrrd.read(str(nrrd_path))  # indexed (i, j, k)
    assert header["space"] == "left-posterior-superior"
    directions = np.asarray(header["space directions"], dtype=np.float64)  # one row per axis
    origin = np.asarray(header["space origin"], dtype=np.float64)

    # Portal voxel (i, j, k) -> RAS -> LPS -> NRRD index, as one affine map.
    portal_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    lps_to_nrrd = np.eye(4)
    lps_to_nrrd[:3, :3] = np.linalg.inv(directions.T)
    lps_to_nrrd[:3, 3] = -lps_to_nrrd[:3, :3] @ origin
    portal_to_nrrd = lps_to_nrrd @ portal_to_lps

    k = np.arange(shape_zyx[0])[:, None, None]
    j = np.arange(shape_zyx[1])[None, :, None]
    i = np.arange(shape_zyx[2])[None, None, :]
    index = [
        np.rint(row[0] * i + row[1] * j + row[2] * k + row[3]).astype(np.int64)
        for row in portal_to_nrrd[:3]
    ]
    inside = np.ones(shape_zyx, dtype=bool)
    for axis, values in enumerate(index):
        inside &= (values >= 0) & (values < data.shape[axis])
    labels = np.zeros(shape_zyx, dtype=data.dtype)
    labels[inside] = data[tuple(np.broadcast_to(v, shape_zyx)[inside] for v in index)]
    return labels


@pytest.fixture(scope="module")
def chest_masks(chest_conversion, reference_dir) -> dict[str, np.ndarray]:
    """Return each reference mask resampled onto the portal image grid, (z, y, x)."""
    image = nib.load(chest_conversion.image_path)
    return {
        organ: _mask_on_grid(
            reference_dir / CHEST_REFERENCE / f"{organ}_seg.nrrd", image.affine, image.shape[::-1]
        )
        for organ in ("liver", "spine", "heart")
    }


@pytest.mark.parametrize(
    ("organ", "label", "centroid_ras", "voxels_per_slice"),
    [
        ("liver", 1, (74.1, 33.3, -127.7), (36233, 35645, 35220)),
        ("spine", 2, (28.3, -77.0, -127.7), (4135, 4200, 4104)),
        ("heart", 3, (-69.7, -1.7, -127.8), (15494, 13649, 12306)),
    ],
)
def test_chest_reference_masks_on_portal_grid(
    chest,
    chest_conversion,
    chest_masks,
    reference_dir,
    organ,
    label,
    centroid_ras,
    voxels_per_slice,
):
    image = nib.load(chest_conversion.image_path)
    mask = chest_masks[organ]
    assert set(np.unique(mask)) <= {0, label}
    selected = mask == label

    k, j, i = np.nonzero(selected)
    centroid = (image.affine @ np.c_[i, j, k, np.ones(len(i))].T)[:3].mean(axis=1)
    np.testing.assert_allclose(centroid, centroid_ras, atol=1.0)

    portal_voxel_mm3 = abs(np.linalg.det(image.affine[:3, :3]))
    reference_voxel_mm3 = 0.810547 * 0.810547 * 1.0
    volume_mm3 = selected.sum() * portal_voxel_mm3
    assert volume_mm3 == pytest.approx(sum(voxels_per_slice) * reference_voxel_mm3, rel=0.01)

    # Image and mask stay aligned: the HU under the mask on the portal grid match the HU
    # under the mask on the DICOM's own grid.
    portal_hu = np.asanyarray(image.dataobj).transpose(2, 1, 0)[selected]
    native_hu = _native_hu_under_mask(chest, reference_dir / CHEST_REFERENCE / f"{organ}_seg.nrrd")
    assert np.median(portal_hu) == pytest.approx(np.median(native_hu), abs=5.0)


def _native_hu_under_mask(chest: LoadedSeries, nrrd_path: Path) -> np.ndarray:
    """Return the DICOM HU under a mask whose NRRD grid is the DICOM's own grid."""
    data, header = nrrd.read(str(nrrd_path))
    datasets = sorted(
        (pydicom.dcmread(path) for path in chest.paths),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    np.testing.assert_allclose(
        header["space origin"], [float(v) for v in datasets[0].ImagePositionPatient], atol=1e-3
    )
    hu_zyx = np.stack([ds.pixel_array.astype(np.float64) - 1024.0 for ds in datasets])
    return hu_zyx[data.transpose(2, 1, 0) > 0]


def test_chest_organ_sides_in_ras(chest_conversion, chest_masks):
    affine = nib.load(chest_conversion.image_path).affine
    centroids = {}
    for organ, mask in chest_masks.items():
        k, j, i = np.nonzero(mask)
        centroids[organ] = (affine @ np.c_[i, j, k, np.ones(len(i))].T)[:3].mean(axis=1)

    assert centroids["liver"][0] > 0  # patient's right
    assert centroids["spine"][1] < 0  # posterior
    assert centroids["heart"][0] < 0  # patient's left


def test_chest_conversion_outputs(chest_conversion):
    assert chest_conversion.shape_zyx == (64, 512, 512)
    assert chest_conversion.modality == "CT"
    assert chest_conversion.slice_count == 3
    assert chest_conversion.spacing_mm == pytest.approx((3.0 / 64, 0.810547, 0.810547), rel=1e-5)


# Philips CT: localizer, two gantry-tilted axial series, secondary captures, DIRFILEs.


@pytest.fixture(scope="module")
def philips_301(philips_zip, tmp_path_factory) -> LoadedSeries:
    return _load_series(philips_zip, tmp_path_factory.mktemp("philips"))


@pytest.fixture(scope="module")
def philips_201(philips_zip, tmp_path_factory) -> LoadedSeries:
    return _load_series(philips_zip, tmp_path_factory.mktemp("philips201"), series_number=201)


def test_philips_chooses_tilted_axial_series(philips_301):
    reasons = {}
    for series in philips_301.report_series:
        reasons.setdefault(series["series_number"], set()).add(series["reason_code"])

    assert philips_301.chosen_number == 301
    assert reasons[301] == {"chosen_most_slices"}
    assert reasons[201] == {"not_chosen"}
    assert reasons[100] == {"localizer"}
    assert reasons[401] <= {"secondary_capture", "dose_report"}
    assert "secondary_capture" in reasons[401]
    assert reasons[None] == {"non_image"}  # the DIRFILE objects
    chosen = next(s for s in philips_301.report_series if s["chosen"])
    assert chosen["orientation"] == "axial"
    assert chosen["tilt_deg"] == pytest.approx(16.5, abs=0.1)
    assert chosen["slice_count"] == 58
    assert chosen["slice_step_mm"] == pytest.approx(2.397, abs=1e-3)


def test_philips_tilt_resampled_with_warning(philips_301, philips_201):
    for loaded, step in ((philips_301, 2.397), (philips_201, 2.371)):
        assert loaded.volume.was_resampled
        assert loaded.volume.spacing_mm[0] == pytest.approx(step, abs=1e-3)
        assert [w.code for w in loaded.warnings] == ["slices_resampled"]


def test_philips_air_near_minus_1024(philips_301):
    hu = philips_301.volume.hu_zyx

    assert hu.min() >= -1024.0
    assert hu.max() < 4000.0  # uint16 never wrapped to +64500
    assert np.percentile(hu, 5) == pytest.approx(-1024.0, abs=30.0)


def test_philips_tilted_native_grid_matchesstored_pixels(philips_301):
    points, expected = stored_pixels(philips_301.paths, per_slice=400)

    values, inside = sample_at_world(
        philips_301.volume.hu_zyx, philips_301.volume.affine_ras, points
    )
    errors = np.abs(values - expected)[inside]

    assert inside.all()
    assert np.median(errors) < 1.0
    assert np.percentile(errors, 95) < 10.0
    assert np.corrcoef(values, expected)[0, 1] > 0.999


def test_philips_tilted_target_grid_matchesstored_pixels(philips_301):
    volume = philips_301.volume
    target, affine = resample_to_shape(volume.hu_zyx, volume.affine_ras, (64, 512, 512))
    points, expected = stored_pixels(philips_301.paths, per_slice=400)

    values, inside = sample_at_world(target, affine, points)

    # Pixel centres within half a target voxel of the edge fall outside the target centres.
    assert inside.mean() > 0.95
    assert np.median(np.abs(values - expected)[inside]) < 5.0
    assert np.corrcoef(values[inside], expected[inside])[0, 1] > 0.99


def test_philips_201_and_301_agree_in_world(philips_201, philips_301):
    """Both series image one phantom in one session: after tilt handling they overlap."""
    reference = philips_301.volume
    k, j, i = np.meshgrid(
        np.arange(reference.hu_zyx.shape[0]),
        np.arange(0, reference.hu_zyx.shape[1], 4),
        np.arange(0, reference.hu_zyx.shape[2], 4),
        indexing="ij",
    )
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    world_ras = (reference.affine_ras @ ijk)[:3].T
    world_lps = world_ras * LPS_TO_RAS

    values_301, inside_301 = sample_at_world(
        reference.hu_zyx, reference.affine_ras, world_lps, margin=1.0
    )
    values_201, inside_201 = sample_at_world(
        philips_201.volume.hu_zyx, philips_201.volume.affine_ras, world_lps, margin=1.0
    )
    # Exactly -1024 is the fill outside each scan's coverage; real air reads above it.
    covered = inside_301 & inside_201 & (values_301 > -1020) & (values_201 > -1020)
    assert covered.sum() > 100_000

    correlation = np.corrcoef(values_301[covered], values_201[covered])[0, 1]
    assert correlation > 0.93
    centroid_301 = world_ras[covered & (values_301 > -500)].mean(axis=0)
    centroid_201 = world_ras[covered & (values_201 > -500)].mean(axis=0)
    np.testing.assert_allclose(centroid_301, centroid_201, atol=1.5)


def test_philips_201_and_301_disagree_when_displaced(philips_201, philips_301):
    """The agreement test above is sensitive: a 3 mm shift breaks it."""
    reference = philips_301.volume
    shape = reference.hu_zyx.shape
    k, j, i = np.meshgrid(
        np.arange(shape[0]), np.arange(0, shape[1], 4), np.arange(0, shape[2], 4), indexing="ij"
    )
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    world_lps = (reference.affine_ras @ ijk)[:3].T * LPS_TO_RAS
    values_301, inside_301 = sample_at_world(reference.hu_zyx, reference.affine_ras, world_lps)
    shifted = world_lps + np.array([0.0, 0.0, 3.0])
    values_201, inside_201 = sample_at_world(
        philips_201.volume.hu_zyx, philips_201.volume.affine_ras, shifted, margin=1.0
    )
    covered = inside_301 & inside_201 & (values_301 > -1020) & (values_201 > -1020)

    assert np.corrcoef(values_301[covered], values_201[covered])[0, 1] < 0.93


def test_philips_conversion_keeps_air(philips_zip, tmp_path):
    result = convert_study(philips_zip, tmp_path, target_hw=(256, 256), target_slices=32)
    hu = np.asanyarray(nib.load(result.image_path).dataobj)

    assert result.report["chosen_series_id"] == result.series_id
    assert hu.min() == -1024
    assert hu.max() < 4000
    assert result.report["output"]["resampled_along_normal"] is True


# MR: the same T1 volume as JPEG Lossless (5001) and JPEG 2000 (6001).


@pytest.fixture(scope="module")
def mr_series(mr_zip, tmp_path_factory) -> dict[int, LoadedSeries]:
    return {
        number: _load_series(mr_zip, tmp_path_factory.mktemp(f"mr{number}"), number)
        for number in (5001, 6001)
    }


def test_mr_decodes_through_pylibjpeg(mr_series):
    syntaxes = {}
    for number, loaded in mr_series.items():
        ds = pydicom.dcmread(loaded.paths[0], stop_before_pixels=True)
        syntaxes[number] = ds.file_meta.TransferSyntaxUID

    assert syntaxes == {5001: "1.2.840.10008.1.2.4.70", 6001: "1.2.840.10008.1.2.4.90"}
    assert all(decoding_plugin(uid) == "pylibjpeg" for uid in syntaxes.values())


def test_mr_series_share_geometry_and_anatomy(mr_series):
    """5001 and 6001 are one acquisition, but 6001 is the prescan-normalised image.

    6001 has ImageType ORIGINAL/PRIMARY/M/NORM and 16 bits stored, 5001 has no NORM and 12
    bits stored, so their stored values differ (voxel sums 244512957 and 159015113, also in
    the dcm2niix references). They must share the grid and the anatomy exactly.
    """
    first, second = mr_series[5001].volume, mr_series[6001].volume

    assert first.hu_zyx.shape == second.hu_zyx.shape
    np.testing.assert_allclose(first.affine_ras, second.affine_ras, atol=1e-6)
    head_masks = [
        volume.hu_zyx > 0.1 * np.percentile(volume.hu_zyx, 99) for volume in (first, second)
    ]
    dice = 2 * np.sum(head_masks[0] & head_masks[1]) / sum(m.sum() for m in head_masks)
    assert dice > 0.98
    assert np.corrcoef(first.hu_zyx.ravel(), second.hu_zyx.ravel())[0, 1] > 0.8


def test_mr_voxel_sum_on_native_grid(mr_series):
    volume = mr_series[5001].volume

    assert volume.hu_zyx.shape == (96, 128, 128)
    assert volume.modality == "MR"
    assert int(volume.hu_zyx.astype(np.float64).sum()) == MR_5001_VOXEL_SUM


@pytest.mark.parametrize("number", [5001, 6001])
def test_mr_geometry_equals_dcm2niix_reference(mr_series, reference_dir, number):
    volume = mr_series[number].volume
    ours = nib.as_closest_canonical(
        nib.Nifti1Image(volume.hu_zyx.transpose(2, 1, 0), volume.affine_ras)
    )
    reference = nib.load(reference_dir / MR_REFERENCE / f"anat-T1w_acq-tfl_{number}.nii")
    qform, qform_code = reference.header.get_qform(coded=True)
    assert qform_code == 1
    canonical = nib.as_closest_canonical(reference)

    assert sorted(reference.shape) == [96, 128, 128]
    assert ours.shape == canonical.shape
    # dcm2niix derives the origin from rounded values; 0.01 mm apart on this series.
    np.testing.assert_allclose(ours.affine, canonical.affine, atol=0.05)
    np.testing.assert_array_equal(ours.get_fdata(), canonical.get_fdata())


def test_mr_native_grid_matches_every_stored_pixel(mr_series):
    loaded = mr_series[6001]
    points, expected = stored_pixels(loaded.paths)

    values, inside = sample_at_world(loaded.volume.hu_zyx, loaded.volume.affine_ras, points)

    assert inside.all()
    # Slice positions sit up to 1e-4 mm off the mean step, so steep edges differ slightly.
    np.testing.assert_allclose(values, expected, atol=0.05)


def test_mr_npz_carries_no_uid_or_member_name(mr_zip, tmp_path):
    # The member names of this export contain the SOP Instance UIDs.
    result = convert_study(mr_zip, tmp_path / "out", target_hw=(64, 64), target_slices=32)
    with zipfile.ZipFile(mr_zip) as archive:
        names = {info.filename for info in archive.infolist() if info.filename.endswith(".dcm")}
    secrets = set()
    for member in open_archive(mr_zip).members:
        ds = pydicom.dcmread(member.open(), stop_before_pixels=True)
        secrets.update(str(e.value) for e in ds.iterall() if e.VR == "UI")
        secrets.update(str(ds.get(keyword, "")) for keyword in ("StudyDate", "PatientName"))
    secrets.discard("")
    # Transfer syntax and SOP class UIDs are constants of the standard, not identifiers.
    secrets = {value for value in secrets if not value.startswith("1.2.840.10008.")}
    npz_bytes = result.npz_path.read_bytes()
    report_text = result.report_path.read_text()

    assert len(secrets) > 192  # one SOP Instance UID per file, plus series and study UIDs
    for secret in secrets | names:
        assert secret.encode() not in npz_bytes, secret
        assert secret not in report_text, secret
