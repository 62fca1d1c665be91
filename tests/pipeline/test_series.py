"""Series discovery, grouping, skip reasons and the choice rule, on synthetic studies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from portal.pipeline import (
    REASON_TEXTS,
    NoDicomFound,
    NoUsableSeries,
    SeriesNotFound,
    SeriesNotUsable,
    SliceGap,
    UnsupportedModality,
    choose_series,
    discover_series,
    inspect_study,
)
from tests.pipeline.archives import open_archive
from tests.pipeline.phantoms import (
    SAGITTAL,
    SeriesSpec,
    ZipMember,
    build_series,
    dicom_bytes,
    localizer,
    secondary_capture,
    series_members,
    structured_report,
)


def _index(zip_path, tmp_path):
    return discover_series(open_archive(zip_path))


def _by_number(index):
    return {candidate.series_number: candidate for candidate in index.candidates}


def test_skips_non_volumes_with_reasons(make_zip, tmp_path):
    axial = build_series(SeriesSpec(slice_count=6))
    members = (
        series_members(localizer(), "P/SCOUT")
        + series_members(axial, "P/AXIAL")
        + series_members([secondary_capture()], "P/SC")
        + series_members([structured_report()], "P/SR")
    )
    index = _index(make_zip(members), tmp_path)
    chosen = choose_series(index)

    reasons = {c.series_number: c.reason_code for c in index.candidates}
    assert reasons == {
        1: "localizer",
        2: "chosen_most_slices",
        800: "secondary_capture",
        900: "non_image",
    }
    assert chosen.series_number == 2
    assert chosen.chosen
    assert all(c.reason_text == REASON_TEXTS[c.reason_code] for c in index.candidates)


def test_reads_files_without_preamble_or_extension(make_zip, tmp_path):
    datasets = build_series(SeriesSpec(slice_count=4))
    members = [
        ZipMember("S/IM1", dicom_bytes(datasets[0], preamble=False)),
        ZipMember("S/IM2.IMA", dicom_bytes(datasets[1])),
        ZipMember("S/IM3.dcm", dicom_bytes(datasets[2], preamble=False)),
        ZipMember("S/IM4", dicom_bytes(datasets[3])),
    ]
    index = _index(make_zip(members), tmp_path)

    assert len(index.candidates) == 1
    assert index.candidates[0].slice_count == 4
    assert index.warnings == []


def test_bad_files_are_skipped_with_warning_by_index(make_zip, tmp_path):
    datasets = build_series(SeriesSpec(slice_count=5))
    truncated = dicom_bytes(datasets[0])[:-200]
    members = series_members(datasets) + [
        ZipMember("S/notes.txt", b"Patient called on Monday.\n" * 10),
        ZipMember("S/IM_damaged", truncated),
        ZipMember("S/empty", b""),
    ]
    index = _index(make_zip(members), tmp_path)

    warnings = {(w.code, w.member_index) for w in index.warnings}
    assert warnings == {("member_not_dicom", 5), ("member_truncated", 6), ("member_empty", 7)}
    assert choose_series(index).slice_count == 5
    assert all("notes" not in w.message for w in index.warnings)


def test_duplicate_file_is_skipped_with_warning(make_zip, tmp_path):
    datasets = build_series(SeriesSpec(slice_count=4))
    members = series_members(datasets)
    members.append(ZipMember("COPY/IM0001.dcm", members[1].data))
    index = _index(make_zip(members), tmp_path)

    assert [(w.code, w.member_index, w.params) for w in index.warnings] == [
        ("duplicate_instance", 4, {"first_index": 1})
    ]
    assert index.candidates[0].slice_count == 4


def test_chooses_most_slices_then_smaller_step(make_zip, tmp_path):
    thick = SeriesSpec(slice_count=8, steps_mm=3.0, series_number=3)
    thin = SeriesSpec(slice_count=8, steps_mm=1.0, series_number=4)
    many = SeriesSpec(slice_count=9, steps_mm=5.0, series_number=5)
    members = []
    for spec in (thick, thin):
        members += series_members(build_series(spec), f"S{spec.series_number}")
    index = _index(make_zip(members), tmp_path)

    assert choose_series(index).series_number == 4
    assert _by_number(index)[3].reason_code == "not_chosen"

    members += series_members(build_series(many), "S5")
    index = _index(make_zip(members), tmp_path / "again")
    assert choose_series(index).series_number == 5


def test_series_ids_are_stable_hashes(make_zip, tmp_path):
    spec = SeriesSpec(slice_count=3)
    members = series_members(build_series(spec))
    first = _index(make_zip(members), tmp_path / "a")
    second = _index(make_zip(members), tmp_path / "b")

    first_id = first.candidates[0].series_id
    assert first_id == second.candidates[0].series_id
    assert len(first_id) == 12
    assert int(first_id, 16) >= 0
    assert spec.series_uid not in first_id
    assert spec.series_uid.split(".")[-1] not in first_id


def test_series_mixing_orientations_is_split(make_zip, tmp_path):
    spec = SeriesSpec(slice_count=5)
    axial = build_series(spec)
    sagittal = build_series(replace(spec, orientation=SAGITTAL, slice_count=4))
    index = _index(make_zip(series_members(axial + sagittal)), tmp_path)

    orientations = sorted((c.orientation, c.slice_count) for c in index.candidates)
    assert orientations == [("axial", 5), ("sagittal", 4)]
    assert len({c.series_id for c in index.candidates}) == 2
    assert choose_series(index).orientation == "axial"


def test_forced_series_id_is_used(make_zip, tmp_path):
    small = SeriesSpec(slice_count=4, series_number=7)
    large = SeriesSpec(slice_count=9, series_number=8)
    members = series_members(build_series(small), "A") + series_members(build_series(large), "B")
    index = _index(make_zip(members), tmp_path)
    small_id = _by_number(index)[7].series_id

    chosen = choose_series(index, small_id)

    assert chosen.series_number == 7
    assert chosen.reason_code == "chosen_forced"
    assert _by_number(index)[8].reason_code == "not_chosen"


def test_unknown_series_id_raises(make_zip, tmp_path):
    index = _index(make_zip(series_members(build_series(SeriesSpec(slice_count=3)))), tmp_path)

    with pytest.raises(SeriesNotFound) as caught:
        choose_series(index, "000000000000")

    assert caught.value.code == "series_not_found"


def test_forcing_a_localizer_raises(make_zip, tmp_path):
    members = series_members(localizer(), "L") + series_members(build_series(SeriesSpec()), "A")
    index = _index(make_zip(members), tmp_path)
    scout_id = _by_number(index)[1].series_id

    with pytest.raises(SeriesNotUsable) as caught:
        choose_series(index, scout_id)

    assert caught.value.code == "series_not_usable"
    assert caught.value.params == {"series_id": scout_id, "reason_code": "localizer"}


def test_forcing_a_gap_series_raises_slice_gap(make_zip, tmp_path):
    gap = SeriesSpec(slice_count=6, steps_mm=[1.0, 1.0, 3.5, 1.0, 1.0], series_number=5)
    members = series_members(build_series(gap), "G") + series_members(build_series(SeriesSpec()))
    index = _index(make_zip(members), tmp_path)

    with pytest.raises(SliceGap):
        choose_series(index, _by_number(index)[5].series_id)


def test_only_non_images_raise_no_usable_series(make_zip, tmp_path):
    members = series_members([structured_report()]) + series_members(localizer(), "L")
    index = _index(make_zip(members), tmp_path)

    with pytest.raises(NoUsableSeries) as caught:
        choose_series(index)

    assert caught.value.code == "no_usable_series"


def test_no_dicom_raises(make_zip, tmp_path):
    zip_path = make_zip([ZipMember("readme.txt", b"hello\n"), ZipMember("scan.jpg", b"\xff\xd8")])

    with pytest.raises(NoDicomFound) as caught:
        _index(zip_path, tmp_path)

    assert caught.value.code == "no_dicom_found"
    assert caught.value.params == {"member_count": 2}


def test_other_modality_raises_unsupported_modality(make_zip, tmp_path):
    spec = SeriesSpec(modality="PT", sop_class_uid="1.2.840.10008.5.1.4.1.1.128")
    index = _index(make_zip(series_members(build_series(spec))), tmp_path)

    with pytest.raises(UnsupportedModality) as caught:
        choose_series(index)

    assert caught.value.code == "unsupported_modality"
    assert caught.value.params == {"modality": "PT"}


def test_gap_series_alone_raises_slice_gap(make_zip, tmp_path):
    spec = SeriesSpec(slice_count=6, steps_mm=[1.0, 1.0, 3.5, 1.0, 1.0])
    index = _index(make_zip(series_members(build_series(spec))), tmp_path)

    assert index.candidates[0].reason_code == "slice_gap"
    with pytest.raises(SliceGap) as caught:
        choose_series(index)

    assert caught.value.code == "slice_gap"
    assert caught.value.params["gap_mm"] == pytest.approx(3.5)
    assert caught.value.params["step_mm"] == pytest.approx(1.0)


def test_inspect_report_lists_every_candidate(make_zip):
    members = series_members(localizer(), "L") + series_members(build_series(SeriesSpec()), "A")
    report = inspect_study(make_zip(members))

    assert [s["reason_code"] for s in report["series"]] == ["localizer", "chosen_most_slices"]
    assert report["chosen_series_id"] == report["series"][1]["series_id"]
    assert report["chosen_reason"]["code"] == "chosen_most_slices"
    assert report["series"][1]["slice_count"] == 10
    assert report["series"][1]["rows"] == 24
    assert report["series"][1]["columns"] == 20
