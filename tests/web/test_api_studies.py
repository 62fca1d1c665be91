import io

import pytest

from tests.web.conftest import post_multipart, zip_bytes

SMALL_ZIP = zip_bytes({"IM0001": b"not really dicom"})


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def upload(client, token, data=SMALL_ZIP, **form):
    return post_multipart(
        client, "/api/studies/", {"file": (io.BytesIO(data), "study.zip"), **form}, auth(token)
    )


def test_upload_creates_study_and_queues_attempt(
    client, make_clinic, make_api_key, queued, app, s3_server
):
    token = make_api_key(make_clinic())
    response = upload(client, token, categories=["lung", "bone"])
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "uploaded"
    assert body["categories"] == ["lung", "bone"]
    assert len(queued) == 1
    from portal.extensions import db
    from portal.studies.models import Study

    with app.app_context():
        study = db.session.get(Study, __import__("uuid").UUID(body["id"]))
        upload_artifact = study.artifacts[0]
        assert (
            upload_artifact.storage_key
            == f"clinics/{study.clinic_id}/studies/{study.id}/upload.zip"
        )
    stored = s3_server.root / s3_server.bucket / upload_artifact.storage_key
    assert stored.read_bytes() == SMALL_ZIP


def test_upload_without_categories_selects_all(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    body = upload(client, token).get_json()
    assert body["categories"] == ["lung", "airway", "adipose_tissue", "soft_tissue", "bone"]


def test_unknown_category_is_problem_json(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    response = upload(client, token, categories=["spleen"])
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "invalid_category"
    assert "spleen" in response.get_json()["detail"]
    assert queued == []


def test_missing_or_bad_key_is_401(client, make_clinic, make_api_key, queued):
    make_api_key(make_clinic())
    for headers in ({}, auth("vzm_nope_nope"), {"Authorization": "Basic abc"}):
        response = client.get("/api/studies/00000000-0000-0000-0000-000000000000/", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["code"] == "unauthorized"


def test_tampered_key_secret_is_401(client, make_clinic, make_api_key):
    token = make_api_key(make_clinic())
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = client.get("/api/health/", headers=auth(tampered))
    assert response.status_code == 200  # health is public
    response = client.post("/api/studies/", headers=auth(tampered))
    assert response.status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_study_of_other_clinic_is_404(client, make_clinic, make_api_key, queued):
    token_a = make_api_key(make_clinic("Clínica A"))
    token_b = make_api_key(make_clinic("Clínica B"))
    study_id = upload(client, token_a).get_json()["id"]
    for suffix in ("", "status/", "result/", "visualization/"):
        own = client.get(f"/api/studies/{study_id}/{suffix}", headers=auth(token_a))
        other = client.get(f"/api/studies/{study_id}/{suffix}", headers=auth(token_b))
        assert own.status_code in (200, 409), suffix
        assert other.status_code == 404, suffix
        assert other.get_json()["code"] == "not_found"


def test_status_reports_progress_and_no_error(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    body = client.get(f"/api/studies/{study_id}/status/", headers=auth(token)).get_json()
    assert body["status"] == "uploaded"
    assert body["progress"] == 0
    assert body["error"] is None


def test_result_before_success_is_409(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    response = client.get(f"/api/studies/{study_id}/result/", headers=auth(token))
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "study_not_succeeded"


def test_failed_study_error_follows_accept_language(client, app, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    from uuid import UUID

    from portal.extensions import db
    from portal.studies.models import Study

    with app.app_context():
        attempt = db.session.get(Study, UUID(study_id)).latest_attempt
        attempt.fail("no_dicom_found")
        db.session.commit()
    english = client.get(
        f"/api/studies/{study_id}/status/", headers=auth(token) | {"Accept-Language": "en"}
    ).get_json()
    portuguese = client.get(f"/api/studies/{study_id}/status/", headers=auth(token)).get_json()
    assert english["error"]["code"] == "no_dicom_found"
    assert english["error"]["message"].startswith("No DICOM image was found")
    assert portuguese["error"]["code"] == "no_dicom_found"
    assert portuguese["error"]["message"] != english["error"]["message"]


def test_upload_over_limit_is_413_with_limit(client, make_app, make_clinic, make_api_key, queued):
    app = make_app(max_upload_bytes=1024 * 1024)
    small_client = app.test_client()
    from portal.clinics.services import create_api_key, create_clinic
    from portal.extensions import db

    with app.app_context():
        _key, token = create_api_key(create_clinic("Clínica Limite", seat_limit=1), name="RIS")
        db.session.commit()
    response = upload(
        small_client,
        token,
        data=b"PK" + b"\0" * (3 * 1024 * 1024),
    )
    assert response.status_code == 413
    body = response.get_json()
    assert body["code"] == "upload_too_large"
    assert "1 MiB" in body["detail"] or "1,0 MiB" in body["detail"]
    english = upload_lang(small_client, token, "en")
    assert english.status_code == 413
    assert "1 MiB" in english.get_json()["detail"] or "1.0 MiB" in english.get_json()["detail"]
    assert queued == []


def upload_lang(client, token, language):
    return post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "study.zip")},
        auth(token) | {"Accept-Language": language},
    )


def test_categories_endpoint_follows_language(client):
    english = client.get("/api/auth/categories/", headers={"Accept-Language": "en"}).get_json()
    portuguese = client.get("/api/auth/categories/").get_json()
    assert [c["key"] for c in english] == [
        "lung",
        "airway",
        "adipose_tissue",
        "soft_tissue",
        "bone",
    ]
    assert english[0]["name"] == "Lungs"
    assert portuguese[0]["name"] == "Pulmões"
    assert all(c["color"].startswith("#") and len(c["color"]) == 7 for c in english)


def test_health_liveness_answers_at_once(client):
    body = client.get("/api/health/").get_json()
    assert body == {"status": "ok"}


def test_health_readiness_names_degraded_part(make_app):
    from tests.inference.fake_server import FakeInferenceServer, Reply

    provider = FakeInferenceServer()
    provider.script("GET", "/v1/health", Reply(200, b'{"status": "ok"}'))
    provider.start()
    try:
        up = make_app(inference_api_url=provider.base_url, inference_api_token="t")
        ready = up.test_client().get("/api/health/?ready=1")
        assert ready.status_code == 200
        assert ready.get_json()["checks"] == {
            "database": True,
            "queue": True,
            "storage": True,
            "inference": True,
        }
        provider.script("GET", "/v1/health", Reply(503, b"{}"))
        degraded = up.test_client().get("/api/health/?ready=1")
        assert degraded.status_code == 503
        assert degraded.get_json()["status"] == "degraded"
        assert degraded.get_json()["checks"]["inference"] is False
        assert degraded.get_json()["checks"]["database"] is True
    finally:
        provider.stop()
