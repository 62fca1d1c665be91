"""Transfer syntaxes: each encoded slice decodes to the HU of the uncompressed truth.

Test fixtures are encoded by pydicom (big endian, deflated, RLE), pyjpegls (JPEG-LS),
Pillow (JPEG baseline) and pylibjpeg-openjpeg (JPEG 2000). The pipeline decodes with the
runtime stack only: pydicom's native and RLE decoders and pylibjpeg's libjpeg and
openjpeg plugins.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from openjpeg.utils import encode_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from portal.pipeline import (
    UnsupportedTransferSyntax,
    choose_series,
    convert_study,
    discover_series,
    load_volume,
)
from portal.pipeline.volume import decoding_plugin
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    SeriesSpec,
    ZipMember,
    build_series,
    encapsulate_frame,
    jpeg_baseline,
    series_members,
    transcode,
)
from tests.pipeline.truth import load_nifti_zyx, sample_at_world

SMALL_GRID = {"target_hw": (16, 16), "target_slices": 6}
#: Unknown to pydicom 3.0 as a transfer syntax (JPEG XL), and registered but without a
#: decoder (HEVC/H.265 Main Profile / Level 5.1).
JPEG_XL = "1.2.840.10008.1.2.4.110"
HEVC = "1.2.840.10008.1.2.4.107"
#: openjpeg's encoder uses 6 wavelet resolutions, which a 24 x 20 slice is too small for.
J2K_SIZE = {"rows": 64, "columns": 64, "pixel_spacing_mm": (0.25, 0.2)}


def _wide_field(world_lps):
    """HU from about -980 to +1540 over the default phantom: stored values use 12 bits."""
    return 400.0 + 90.0 * world_lps[..., 0] + 60.0 * world_lps[..., 1]


def _convert_native(make_zip, work_dir, spec, datasets):
    """Convert the datasets; return the result and `native.nii.gz` at each stored pixel.

    The values are sampled at the pixels' world positions, shape (slices, rows, columns).
    """
    result = convert_study(make_zip(series_members(datasets)), work_dir, **SMALL_GRID)
    native_zyx, affine_ras = load_nifti_zyx(result.native_path)
    world_lps = np.stack([spec.pixel_world_lps(k) for k in range(spec.slice_count)])
    values, inside = sample_at_world(
        native_zyx, affine_ras, world_lps.reshape(-1, 3), tolerance=1e-3
    )
    assert inside.all()
    return result, values.reshape(world_lps.shape[:-1])


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGLSLossless],
    ids=["big-endian", "deflated", "rle", "jpeg-ls"],
)
@pytest.mark.parametrize("encoding", ["int16", "uint16"])
def test_lossless_syntax_matches_truth(make_zip, work_dir, transfer_syntax, encoding):
    spec = SeriesSpec(slice_count=5, encoding=encoding, hu_field=_wide_field)
    datasets = [transcode(ds, transfer_syntax) for ds in build_series(spec)]

    result, native_zyx = _convert_native(make_zip, work_dir, spec, datasets)

    assert result.warnings == ()
    assert result.slice_count == 5
    for k in range(spec.slice_count):
        # Sampling through the float32 affine of the file blends in 1e-5 of a neighbour.
        np.testing.assert_allclose(native_zyx[k], spec.expected_hu(k), atol=0.01)
    # The field spans negative HU, so a sign or byte-order error cannot pass.
    assert native_zyx.min() < -500
    assert native_zyx.max() > 1000


def test_jpeg_baseline_within_tolerance(make_zip, work_dir):
    spec = SeriesSpec(slice_count=5, encoding="uint16", rescale_slope=2.0, rescale_intercept=-200.0)
    datasets = build_series(spec)
    for k, ds in enumerate(datasets):
        assert spec.stored_values(k).max() < 256  # the truth fits in 8 bits
        jpeg_baseline(ds, spec.stored_values(k))

    result, native_zyx = _convert_native(make_zip, work_dir, spec, datasets)

    errors = np.concatenate(
        [np.abs(native_zyx[k] - spec.expected_hu(k)).ravel() for k in range(spec.slice_count)]
    )
    assert result.slice_count == 5
    # JPEG quality 95 on a smooth ramp: a few stored units at most, 2 HU per unit.
    assert errors.max() <= 8.0
    assert errors.mean() <= 2.0


def test_compressed_syntaxes_decode_through_pylibjpeg():
    for transfer_syntax in (JPEGBaseline8Bit, JPEGLSLossless, JPEG2000Lossless):
        assert decoding_plugin(UID(transfer_syntax)) == "pylibjpeg", transfer_syntax
    # RLE and the native syntaxes use pydicom's own decoders.
    assert decoding_plugin(UID(RLELossless)) == ""


def _with_transfer_syntax_uid(member: ZipMember, uid: str) -> ZipMember:
    """Rewrite the HEVC transfer syntax UID in a member's file meta as `uid` (same length).

    pydicom refuses to write a transfer syntax it does not know, such as JPEG XL.
    """
    assert len(uid) == len(HEVC)
    return ZipMember(member.name, member.data.replace(HEVC.encode(), uid.encode(), 1))


@pytest.mark.parametrize(
    ("transfer_syntax", "keyword"), [(JPEG_XL, "unregistered"), (HEVC, "HEVCMP51")]
)
def test_undecodable_syntax_fails_with_code(make_zip, work_dir, transfer_syntax, keyword):
    datasets = [
        encapsulate_frame(ds, b"\x00" * 64, HEVC) for ds in build_series(SeriesSpec(slice_count=4))
    ]
    members = [_with_transfer_syntax_uid(m, transfer_syntax) for m in series_members(datasets)]

    with pytest.raises(UnsupportedTransferSyntax) as caught:
        convert_study(make_zip(members), work_dir, **SMALL_GRID)

    assert caught.value.code == "unsupported_transfer_syntax"
    assert caught.value.params == {
        "transfer_syntax": keyword,
        "transfer_syntax_uid": transfer_syntax,
    }
    assert transfer_syntax in caught.value.message
    assert "Export the study uncompressed" in caught.value.message


def test_undecodable_series_skipped_for_good_one(make_zip, work_dir):
    undecodable = [
        encapsulate_frame(ds, b"\x00" * 64, HEVC)
        for ds in build_series(SeriesSpec(slice_count=8, series_number=4))
    ]
    good = build_series(SeriesSpec(slice_count=5))

    result = convert_study(make_zip(series_members(undecodable + good)), work_dir, **SMALL_GRID)

    reasons = {s["series_number"]: s["reason_code"] for s in result.report["series"]}
    assert reasons == {2: "chosen_most_slices", 4: "unsupported_transfer_syntax"}
    assert result.slice_count == 5


def _j2k_slices(spec, *, stream_signed: bool, header_signed: bool):
    """Encode 12-bit slices as JPEG 2000 with the stream's and the header's signedness set apart."""
    datasets = build_series(spec)
    for k, ds in enumerate(datasets):
        pattern = spec.stored_values(k).astype(np.int32) & 0x0FFF  # the 12-bit bit pattern
        if stream_signed:
            values = np.where(pattern >= 2048, pattern - 4096, pattern).astype(np.int16)
        else:
            values = pattern.astype(np.uint16)
        encapsulate_frame(ds, encode_array(values, bits_stored=12), JPEG2000Lossless)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelRepresentation = 1 if header_signed else 0
    return datasets


@pytest.mark.parametrize(
    ("encoding", "stream_signed"),
    [("int16", False), ("uint16", True)],
    ids=["signed-header-unsigned-stream", "unsigned-header-signed-stream"],
)
def test_j2k_sign_mismatch_follows_header(make_zip, encoding, stream_signed):
    intercept = 0.0 if encoding == "int16" else -1024.0
    spec = SeriesSpec(
        slice_count=4,
        encoding=encoding,
        rescale_intercept=intercept,
        hu_field=_wide_field,
        **J2K_SIZE,
    )
    if encoding == "int16":
        # Signed 12-bit stored values run from -2048 to 2047.
        spec = replace(spec, hu_field=lambda world: np.clip(_wide_field(world), -2048, 2047))
    datasets = _j2k_slices(spec, stream_signed=stream_signed, header_signed=encoding == "int16")
    index = discover_series(open_archive(make_zip(series_members(datasets))))
    warnings = []

    volume = load_volume(choose_series(index), warnings)

    assert [(w.code, w.member_index) for w in warnings] == [
        ("pixel_sign_mismatch", k) for k in range(4)
    ]
    for k in range(spec.slice_count):
        np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))


def test_j2k_matching_sign_has_no_warning(make_zip):
    spec = SeriesSpec(slice_count=3, encoding="uint16", hu_field=_wide_field, **J2K_SIZE)
    datasets = _j2k_slices(spec, stream_signed=False, header_signed=False)
    index = discover_series(open_archive(make_zip(series_members(datasets))))
    warnings = []

    volume = load_volume(choose_series(index), warnings)

    assert warnings == []
    np.testing.assert_array_equal(volume.hu_zyx[2], spec.expected_hu(2))


def test_jpeg_ls_signed_12_bit_sign_extended(make_zip):
    spec = SeriesSpec(
        slice_count=3,
        rescale_intercept=0.0,
        hu_field=lambda world: np.clip(_wide_field(world), -2048, 2047),
    )
    datasets = build_series(spec)
    for ds in datasets:
        ds.BitsStored, ds.HighBit = 12, 11
        transcode(ds, JPEGLSLossless)
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    volume = load_volume(choose_series(index))

    assert volume.hu_zyx.min() < -500
    for k in range(spec.slice_count):
        np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))
