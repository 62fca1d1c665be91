import io
import uuid

import pytest

from tests.web.conftest import post_multipart, zip_bytes


def upload_page(client, data=None, categories=("lung", "bone"), language=None):
    headers = {"Accept-Language": language} if language else {}
    return post_multipart(
        client,
        "/studies/new",
        {
            "file": (io.BytesIO(data or zip_bytes({"a": b"b"})), "estudo.zip"),
            "categories": list(categories),
        },
        headers,
    )


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/studies/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=/studies/")


def test_user_without_membership_sees_no_clinic_page(app, client, login):
    from portal.clinics.models import User
    from portal.extensions import db

    with app.app_context():
        user = User(email="sem@example.com")
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    login(user_id)
    response = client.get("/studies/", follow_redirects=True)
    assert response.status_code == 403
    assert "clínica" in response.get_data(as_text=True)


def test_upload_form_preselects_every_category(client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    page = client.get("/studies/new").get_data(as_text=True)
    for key in ("lung", "airway", "adipose_tissue", "soft_tissue", "bone"):
        assert f'value="{key}" checked' in page or 'checked id="categories-' in page
    assert page.count("checked") == 5


def test_upload_page_creates_study_and_redirects(client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    response = upload_page(client)
    assert response.status_code == 302
    study_path = response.headers["Location"]
    assert study_path.startswith("/studies/")
    assert len(queued) == 1
    page = client.get(study_path).get_data(as_text=True)
    assert 'hx-get="' in page and 'hx-trigger="every 2s"' in page


def test_upload_page_rejects_non_zip_name(client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    response = client.post(
        "/studies/new",
        data={"file": (io.BytesIO(b"x"), "scan.dcm"), "categories": ["lung"]},
        content_type="multipart/form-data",
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 400
    assert "must be a ZIP archive" in response.get_data(as_text=True)
    assert queued == []


def test_upload_page_over_limit_is_413(client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    response = upload_page(client, data=b"\0" * (6 * 1024 * 1024), language="en")
    assert response.status_code == 413
    assert "5 MiB" in response.get_data(as_text=True) or "5.0 MiB" in response.get_data(
        as_text=True
    )
    assert queued == []


def test_status_partial_stops_polling_when_terminal(
    app, client, make_clinic, make_user, login, queued
):
    login(make_user(make_clinic()))
    study_path = upload_page(client).headers["Location"]
    study_id = uuid.UUID(study_path.rsplit("/", 1)[1])
    from portal.extensions import db
    from portal.studies.models import Study

    with app.app_context():
        db.session.get(Study, study_id).latest_attempt.fail("archive_invalid")
        db.session.commit()
    partial = client.get(f"{study_path}/status", headers={"Accept-Language": "en"})
    text = partial.get_data(as_text=True)
    assert "hx-get" not in text
    assert "not a valid ZIP archive" in text
    assert "archive_invalid" in text


def test_viewer_redirects_until_success(client, make_clinic, make_user, login, queued):
    login(make_user(make_clinic()))
    study_path = upload_page(client).headers["Location"]
    response = client.get(f"{study_path}/viewer")
    assert response.status_code == 302
    assert response.headers["Location"] == study_path
    data = client.get(f"{study_path}/viewer-data")
    assert data.status_code == 409


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_pages_hide_other_clinics_studies(app, make_clinic, make_user, login, queued):
    clinic_a, clinic_b = make_clinic("Clínica A"), make_clinic("Clínica B")
    doctor_a = app.test_client()
    doctor_b = app.test_client()
    login(make_user(clinic_a, email="a@example.com"), test_client=doctor_a)
    login(make_user(clinic_b, email="b@example.com"), test_client=doctor_b)
    study_path = upload_page(doctor_a).headers["Location"]
    assert doctor_a.get(study_path).status_code == 200
    for suffix in ("", "/status", "/viewer", "/viewer-data"):
        assert doctor_b.get(study_path + suffix).status_code == 404, suffix
    list_a = doctor_a.get("/studies/").get_data(as_text=True)
    list_b = doctor_b.get("/studies/").get_data(as_text=True)
    assert study_path in list_a
    assert study_path not in list_b


def test_language_switch_persists(client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    english = client.post("/auth/locale", data={"locale": "en", "next": "/studies/"})
    assert english.status_code == 302
    assert "New study" in client.get("/studies/").get_data(as_text=True)


def test_locale_switch_ignores_external_next(client):
    response = client.post("/auth/locale", data={"locale": "en", "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"
