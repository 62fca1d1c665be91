"""The ingestion report on the study page and in the JSON API, the series picker, and the
viewer's choice between the native and the model grid."""

import io
import uuid

import pytest

from tests.web.conftest import mark_succeeded, post_multipart, zip_bytes

REPORT = {
    "version": 1,
    "series": [
        {
            "series_id": "aaaaaaaaaaaa",
            "series_number": 1,
            "modality": "CT",
            "description": "Scout",
            "slices": 1,
            "pixel_spacing_mm": [0.7, 0.7],
            "slice_step_mm": None,
            "orientation": None,
            "chosen": False,
            "reason_code": "localizer",
        },
        {
            "series_id": "bbbbbbbbbbbb",
            "series_number": 2,
            "modality": "CT",
            "description": "TORAX 1.0",
            "slices": 300,
            "pixel_spacing_mm": [0.68, 0.68],
            "slice_step_mm": 1.0,
            "orientation": "axial",
            "chosen": True,
            "reason_code": "chosen_most_slices",
        },
        {
            "series_id": "cccccccccccc",
            "series_number": 3,
            "modality": "CT",
            "description": "TORAX 5.0",
            "slices": 60,
            "pixel_spacing_mm": [0.68, 0.68],
            "slice_step_mm": 5.0,
            "orientation": "axial",
            "chosen": False,
            "reason_code": "not_chosen",
        },
    ],
    "chosen_series_id": "bbbbbbbbbbbb",
    "warnings": [
        {"code": "member_not_dicom", "member_index": 7, "params": {}},
        {"code": "other_studies", "member_index": None, "params": {"study_count": 2}},
    ],
    "output": {"window": {"kind": "ct", "center": 40.0, "width": 400.0}},
}


def _upload(client):
    return post_multipart(
        client,
        "/studies/new",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "estudo.zip"), "categories": ["lung"]},
    ).headers["Location"]


def _set_report(app, study_path, report=REPORT):
    from portal.extensions import db
    from portal.studies.models import Study

    study_id = uuid.UUID(study_path.rsplit("/", 1)[1])
    with app.app_context():
        db.session.get(Study, study_id).latest_attempt.report = report
        db.session.commit()
    return study_id


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", ["Localizer (scout) image", "File 7 of the ZIP is not a DICOM file", "axial"]),
        ("pt-BR", ["Imagem de localização (scout)", "O arquivo 7 do ZIP não é um arquivo DICOM"]),
    ],
)
def test_detail_shows_translated_report(
    app, client, make_clinic, make_user, login, queued, language, expected
):
    login(make_user(make_clinic()))
    study_path = _upload(client)
    _set_report(app, study_path)

    page = client.get(study_path, headers={"Accept-Language": language}).get_data(as_text=True)

    assert 'id="ingestion-report"' in page
    assert "TORAX 1.0" in page
    assert "0.68 × 0.68 × 1.00" in page
    for text in expected:
        assert text in page, text


def test_running_study_has_no_picker(app, client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    study_path = _upload(client)
    _set_report(app, study_path)

    page = client.get(study_path).get_data(as_text=True)

    assert "series-picker" not in page
    assert 'name="series_id"' not in page


def test_finished_study_has_picker(app, client, make_clinic, make_user, login, queued):
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    login(make_user(make_clinic()))
    study_path = _upload(client)
    study_id = _set_report(app, study_path)
    with app.app_context(), all_clinics():
        db.session.get(Study, uuid.UUID(str(study_id))).latest_attempt.fail("no_usable_series")
        db.session.commit()

    page = client.get(study_path, headers={"Accept-Language": "en"}).get_data(as_text=True)

    assert f'action="/studies/{study_id}/rerun"' in page
    assert 'name="series_id"' in page
    assert 'value="bbbbbbbbbbbb" selected' in page
    assert 'value="cccccccccccc"' in page
    assert 'value="aaaaaaaaaaaa"' not in page  # a localizer cannot be picked


def test_api_study_detail_has_report(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    body = post_multipart(
        client, "/api/studies/", {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")}, headers
    ).get_json()
    assert client.get(f"/api/studies/{body['id']}/", headers=headers).get_json()["report"] is None
    _set_report(app, f"/studies/{body['id']}")

    report = client.get(f"/api/studies/{body['id']}/", headers=headers).get_json()["report"]

    assert report["chosen_series_id"] == "bbbbbbbbbbbb"
    assert [s["reason_code"] for s in report["series"]] == [
        "localizer",
        "chosen_most_slices",
        "not_chosen",
    ]
    assert report["series"][1]["slices"] == 300
    assert report["series"][0]["reason"].startswith("Localizer")
    assert report["warnings"][0] == {
        "code": "member_not_dicom",
        "member_index": 7,
        "message": "File 7 of the ZIP is not a DICOM file; skipped.",
    }
    assert report["window"] == {"kind": "ct", "center": 40.0, "width": 400.0}


@pytest.mark.parametrize("with_native", [True, False])
def test_viewer_data_prefers_native_pair(
    app, client, make_clinic, make_user, login, queued, with_native
):
    from portal.studies.models import ArtifactKind

    login(make_user(make_clinic()))
    study_path = _upload(client)
    study_id = uuid.UUID(study_path.rsplit("/", 1)[1])
    kinds = [ArtifactKind.IMAGE_NIFTI, ArtifactKind.MASK_NIFTI]
    if with_native:
        kinds += [ArtifactKind.NATIVE_NIFTI, ArtifactKind.MASK_NATIVE_NIFTI]
    mark_succeeded(app, study_id, kinds)

    data = client.get(f"{study_path}/viewer-data").get_json()

    image_name = "native.nii.gz" if with_native else "image.nii.gz"
    mask_name = "mask_native.nii.gz" if with_native else "mask.nii.gz"
    assert data["grid"] == ("native" if with_native else "model")
    assert f"/{image_name}?" in data["image_url"]
    assert f"/{mask_name}?" in data["mask_url"]
