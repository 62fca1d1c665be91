"""Patient identifiers read from the chosen series, kept out of the report and the NPZ."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from portal.isolation import RESULT_FILE_NAME, convert_in_child
from portal.pipeline import PatientIdentifiers, convert_study
from tests.pipeline.phantoms import (
    ACCESSION_NUMBER,
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    SeriesSpec,
    build_series,
    localizer,
    series_members,
)

PLANTED = PatientIdentifiers(
    patient_name=PATIENT_NAME,
    patient_id=PATIENT_ID,
    birth_date=BIRTH_DATE,
    accession_number=ACCESSION_NUMBER,
)
SMALL_GRID = {"target_hw": (16, 16), "target_slices": 4}


def test_convert_reads_identifiers_of_chosen_series(make_zip, work_dir):
    zip_path = make_zip(series_members(build_series(SeriesSpec())))
    result = convert_study(zip_path, work_dir, **SMALL_GRID)
    assert result.identifiers == PLANTED


def test_identifiers_come_from_chosen_series(make_zip, work_dir):
    scout = localizer()
    for dataset in scout:
        dataset.AccessionNumber = "ACC-SCOUT"
    chosen = build_series(SeriesSpec(slice_count=6))
    zip_path = make_zip(series_members(scout, "A") + series_members(chosen, "B"))
    result = convert_study(zip_path, work_dir, **SMALL_GRID)
    assert result.identifiers.accession_number == ACCESSION_NUMBER


def test_missing_identifiers_are_empty(make_zip, work_dir):
    datasets = build_series(SeriesSpec())
    for dataset in datasets:
        del dataset.PatientBirthDate
        del dataset.AccessionNumber
    zip_path = make_zip(series_members(datasets))
    result = convert_study(zip_path, work_dir, **SMALL_GRID)
    assert result.identifiers == replace(PLANTED, birth_date="", accession_number="")


def test_report_and_npz_hold_no_identifiers(make_zip, work_dir):
    zip_path = make_zip(series_members(build_series(SeriesSpec())))
    result = convert_study(zip_path, work_dir, **SMALL_GRID)
    written = result.report_path.read_bytes() + json.dumps(result.report).encode()
    npz_bytes = result.npz_path.read_bytes()
    for value in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, ACCESSION_NUMBER, "SILVA"):
        assert value.encode() not in written
        assert value.encode() not in npz_bytes
    with np.load(result.npz_path, allow_pickle=False) as npz:
        assert set(npz.files) == {"image", "spacing_mm", "modality", "categories"}


def test_child_returns_identifiers_and_removes_result_file(make_zip, tmp_path):
    zip_path = make_zip(series_members(build_series(SeriesSpec())))
    out_dir = tmp_path / "work" / "out"
    conversion = convert_in_child(
        zip_path,
        out_dir,
        memory_limit_mb=2048,
        time_limit_s=120,
        options={"target_hw": [16, 16], "target_slices": 4},
    )
    assert conversion.identifiers == PLANTED.to_dict()
    assert PATIENT_NAME not in repr(conversion)
    assert not (out_dir.parent / RESULT_FILE_NAME).exists()
    request_text = (out_dir.parent / "conversion-request.json").read_text()
    assert PATIENT_ID not in request_text
