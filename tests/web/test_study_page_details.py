"""Study page details: stages, refresh at the end, language choice, empty uploads, viewer data."""

import io
import uuid

from tests.web.conftest import post_multipart, zip_bytes


def upload_page(client, data=None):
    return post_multipart(
        client,
        "/studies/new",
        {
            "file": (io.BytesIO(data if data is not None else zip_bytes({"a": b"b"})), "e.zip"),
            "categories": ["lung", "bone"],
        },
        {"Accept-Language": "en"},
    )


def fail_latest_attempt(app, study_path, *, progress, code="inference_failed"):
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        attempt = db.session.get(Study, uuid.UUID(study_path.rsplit("/", 1)[1])).latest_attempt
        attempt.progress = progress
        attempt.fail(code)
        db.session.commit()


def test_stages_show_where_a_study_stopped(app, client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    study_path = upload_page(client).headers["Location"]
    running = client.get(study_path, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert running.count('data-state="current"') == 1
    assert running.count('data-state="pending"') == 4

    fail_latest_attempt(app, study_path, progress=40)
    failed = client.get(study_path, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert failed.count('data-state="done"') == 3
    assert failed.count('data-state="failed"') == 1
    assert failed.count('data-state="pending"') == 1


def test_status_partial_reloads_when_finished(app, client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    study_path = upload_page(client).headers["Location"]
    polling = client.get(f"{study_path}/status", headers={"HX-Request": "true"})
    assert "HX-Refresh" not in polling.headers
    fail_latest_attempt(app, study_path, progress=10, code="no_dicom_found")
    final = client.get(f"{study_path}/status", headers={"HX-Request": "true"})
    assert final.headers["HX-Refresh"] == "true"
    plain = client.get(f"{study_path}/status")
    assert "HX-Refresh" not in plain.headers


def test_plain_portuguese_browser_gets_portuguese(client):
    for header in ("pt", "pt-PT,pt;q=0.9,en;q=0.8", "pt-BR", "es, pt;q=0.5"):
        page = client.get("/auth/signed-out", headers={"Accept-Language": header})
        assert 'lang="pt-BR"' in page.get_data(as_text=True), header
    english = client.get("/auth/signed-out", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert 'lang="en"' in english.get_data(as_text=True)


def test_signed_out_page_keeps_chosen_language(client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    client.post("/auth/locale", data={"locale": "en", "next": "/studies/"})
    assert client.post("/auth/logout").status_code == 302
    page = client.get("/auth/signed-out", headers={"Accept-Language": "pt-BR"})
    assert 'lang="en"' in page.get_data(as_text=True)


def test_empty_upload_has_its_own_error(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(b""), "vazio.zip")},
        {"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "upload_empty"
    assert "0 bytes" in response.get_json()["detail"]
    assert queued == []


def test_viewer_window_follows_settings():
    from portal.config import Settings
    from portal.studies.views import window_hu

    settings = Settings.from_env({"DICOM_WINDOW_CENTER": "50", "DICOM_WINDOW_WIDTH": "350"})
    assert window_hu(settings, "CT") == [-125.0, 225.0]
    assert window_hu(settings, "MR") is None


def test_missing_labels_lists_requested_absent_categories(app):
    from portal.studies.models import Study
    from portal.studies.views import missing_labels

    study = Study(requested_categories=["lung", "airway", "bone"])
    present = [{"key": "lung"}, {"key": "bone"}]
    with app.test_request_context():
        absent = missing_labels(study, present, locale="pt_BR")
    assert [label["key"] for label in absent] == ["airway"]
    assert absent[0]["name"] == "Vias aéreas"
    assert absent[0]["color"].startswith("#")
