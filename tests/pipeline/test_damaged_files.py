"""Damaged and unusual files among good ones: empty, truncated, wrong character sets, paths."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from portal.pipeline import choose_series, convert_study, discover_series, load_volume
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    PATIENT_NAME,
    SeriesSpec,
    ZipMember,
    build_series,
    dicom_bytes,
    series_members,
)

SMALL_GRID = {"target_hw": (16, 16), "target_slices": 6}


def _warning_pairs(warnings):
    return [(warning.code, warning.member_index) for warning in warnings]


def _rle_bytes(ds) -> bytes:
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return dicom_bytes(ds)


@pytest.mark.parametrize("encoding", ["native", "rle"])
def test_truncated_copies_skipped_at_every_cut(make_zip, work_dir, caplog, encoding):
    spec = SeriesSpec(slice_count=6)
    good = series_members(build_series(spec))
    extra = build_series(SeriesSpec(slice_count=1, series_number=7))[0]
    whole = dicom_bytes(extra) if encoding == "native" else _rle_bytes(extra)
    # Every cut from just after the "DICM" prefix to one byte short of the end: inside the
    # file meta, inside tags and values of the header, inside the pixel data element.
    cuts = sorted({*range(132, len(whole), 5), len(whole) - 1})
    damaged = [ZipMember(f"SILVA^MARIA/CUT/IM{cut}", whole[:cut]) for cut in cuts]
    members = good + [ZipMember("SILVA^MARIA/EMPTY/IM0001", b"")] + damaged

    with caplog.at_level(logging.DEBUG):
        result = convert_study(make_zip(members), work_dir, **SMALL_GRID)

    expected = [("member_empty", 6)] + [("member_truncated", 7 + i) for i in range(len(cuts))]
    assert _warning_pairs(result.warnings) == expected
    assert result.slice_count == 6
    assert [s["series_number"] for s in result.report["series"]] == [2]
    assert "SILVA" not in caplog.text
    assert PATIENT_NAME not in result.report_path.read_text()


def test_truncated_slice_of_chosen_series_skipped(make_zip, work_dir):
    spec = SeriesSpec(slice_count=7)
    members = series_members(build_series(spec))
    members[6] = ZipMember(members[6].name, members[6].data[:-300])

    result = convert_study(make_zip(members), work_dir, **SMALL_GRID)

    assert _warning_pairs(result.warnings) == [("member_truncated", 6)]
    assert result.slice_count == 6
    assert result.report["output"]["native_shape_zyx"] == [6, 24, 20]


def test_rle_fragment_cut_short_is_truncated(make_zip):
    datasets = build_series(SeriesSpec(slice_count=4))
    whole = _rle_bytes(datasets[3])
    members = series_members(datasets[:3]) + [
        # Cut inside the last fragment, and just before the sequence delimiter.
        ZipMember("S/CUT1", whole[:-40]),
        ZipMember("S/CUT2", whole[:-8]),
    ]
    index = discover_series(open_archive(make_zip(members)))

    assert _warning_pairs(index.warnings) == [("member_truncated", 3), ("member_truncated", 4)]


def test_complete_rle_fragments_no_warning(make_zip):
    spec = SeriesSpec(slice_count=4)
    members = [ZipMember(f"S/IM{k}", _rle_bytes(ds)) for k, ds in enumerate(build_series(spec))]
    index = discover_series(open_archive(make_zip(members)))

    volume = load_volume(choose_series(index))

    assert index.warnings == []
    for k in range(spec.slice_count):
        np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))


def test_encapsulated_without_fragments_truncated(make_zip):
    datasets = build_series(SeriesSpec(slice_count=4))
    datasets[3].file_meta.TransferSyntaxUID = RLELossless
    datasets[3].PixelData = encapsulate([b"\x00" * 64])
    whole = dicom_bytes(datasets[3])
    members = series_members(datasets[:3]) + [
        ZipMember("S/CUT", whole[: whole.index(b"\xfe\xff\x00\xe0")])
    ]
    index = discover_series(open_archive(make_zip(members)))

    assert _warning_pairs(index.warnings) == [("member_truncated", 3)]


def _with_name(ds, character_set: str, name_bytes: bytes):
    ds.SpecificCharacterSet = character_set
    ds.add_new(0x00100010, "PN", name_bytes)
    ds.add_new(0x0008103E, "LO", b"T\xd3RAX")  # "TÓRAX" in Latin-1
    return ds


@pytest.mark.parametrize(
    ("character_set", "code"),
    [("ISO_IR 192", "character_set_mismatch"), ("ISO_IR 999", "character_set_unknown")],
)
def test_wrong_character_set_still_read(make_zip, work_dir, caplog, character_set, code):
    spec = SeriesSpec(slice_count=5)
    datasets = build_series(spec)
    for ds in datasets[1:3]:
        _with_name(ds, character_set, "JOSÉ^SILVA".encode("latin-1"))
    for ds in datasets[3:]:
        _with_name(ds, "ISO_IR 100", "JOSÉ^SILVA".encode("latin-1"))
    _with_name(datasets[0], "ISO_IR 192", "JOSÉ^SILVA".encode())
    datasets[0].SeriesDescription = "TÓRAX"

    with caplog.at_level(logging.DEBUG):
        result = convert_study(make_zip(series_members(datasets)), work_dir, **SMALL_GRID)

    # One patient, whichever encoding each file used: no multiple_patients rejection.
    assert _warning_pairs(result.warnings) == [(code, 1), (code, 2)]
    assert result.slice_count == 5
    assert result.series_description == "TÓRAX"
    native = load_volume(
        choose_series(discover_series(open_archive(make_zip(series_members(datasets)))))
    )
    for k in range(spec.slice_count):
        np.testing.assert_array_equal(native.hu_zyx[k], spec.expected_hu(k))
    assert "SILVA" not in caplog.text
    assert "JOS" not in caplog.text


def test_correct_character_sets_give_no_warning(make_zip):
    datasets = build_series(SeriesSpec(slice_count=3))
    _with_name(datasets[0], "ISO_IR 100", "JOSÉ^SILVA".encode("latin-1"))
    _with_name(datasets[1], "ISO_IR 192", "JOSÉ^SILVA".encode())
    datasets[1].SeriesDescription = "TÓRAX"
    _with_name(datasets[2], "ISO-IR 100", "JOSÉ^SILVA".encode("latin-1"))
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    assert index.warnings == []
    assert index.candidates[0].slice_count == 3


def test_deep_nesting_and_repeated_file_names(make_zip, work_dir):
    first = SeriesSpec(slice_count=6, series_number=2)
    second = SeriesSpec(
        slice_count=4, series_number=3, steps_mm=2.0, origin_lps=(-8.0, -11.0, 40.0)
    )
    deep = "/".join(f"LEVEL{level:02d}" for level in range(12))
    members = []
    # Both series use the same file names IM0001 ... in different folders, 12 levels deep.
    for folder, spec in ((f"{deep}/A", first), (f"{deep}/B", second)):
        for k, ds in enumerate(build_series(spec)):
            members.append(ZipMember(f"{folder}/IM{k + 1:04d}", dicom_bytes(ds)))
    index = discover_series(open_archive(make_zip(members)))

    assert index.warnings == []
    assert [(c.series_number, c.slice_count) for c in index.candidates] == [(2, 6), (3, 4)]
    assert index.candidates[0].member_indices == tuple(range(6))
    assert index.candidates[1].member_indices == tuple(range(6, 10))
    for candidate, spec in zip(index.candidates, (first, second), strict=True):
        volume = load_volume(choose_series(index, candidate.series_id))
        for k in range(spec.slice_count):
            np.testing.assert_array_equal(volume.hu_zyx[k], spec.expected_hu(k))


def test_mixed_encodings_one_patient(make_zip):
    datasets = build_series(SeriesSpec(slice_count=4))
    for ds in datasets[:2]:
        _with_name(ds, "ISO_IR 100", "JOSÉ^SILVA".encode("latin-1"))
    for ds in datasets[2:]:
        # A valid UTF-8 name next to a Latin-1 description: the file is read as Latin-1.
        _with_name(ds, "ISO_IR 192", "JOSÉ SILVA".encode())
    index = discover_series(open_archive(make_zip(series_members(datasets))))

    assert _warning_pairs(index.warnings) == [
        ("character_set_mismatch", 2),
        ("character_set_mismatch", 3),
    ]
    assert index.candidates[0].slice_count == 4
