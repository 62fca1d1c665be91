"""`Idempotency-Key` on `POST /api/studies/`: a retried upload returns the first study."""

from __future__ import annotations

import io

import pytest

from tests.web.conftest import post_multipart, zip_bytes
from tests.web.test_api_studies import SMALL_ZIP, auth

OTHER_ZIP = zip_bytes({"IM0002": b"another study"})


def upload_with_key(client, token, key, data=SMALL_ZIP, categories=("lung",)):
    fields = {"file": (io.BytesIO(data), "study.zip"), "categories": list(categories)}
    return post_multipart(client, "/api/studies/", fields, auth(token) | {"Idempotency-Key": key})


def count_studies(app) -> int:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        return db.session.scalar(select(func.count()).select_from(Study))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_same_key_same_upload_returns_same_study(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    first = upload_with_key(client, token, "exam-42")
    again = upload_with_key(client, token, "exam-42")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert len(queued) == 1
    assert count_studies(app) == 1


def test_category_order_does_not_matter(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    first = upload_with_key(client, token, "exam-43", categories=("lung", "bone"))
    again = upload_with_key(client, token, "exam-43", categories=("bone", "lung"))
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_same_key_other_zip_is_conflict(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    first = upload_with_key(client, token, "exam-44")
    conflict = upload_with_key(client, token, "exam-44", data=OTHER_ZIP)
    assert first.status_code == 202
    assert conflict.status_code == 409
    assert conflict.mimetype == "application/problem+json"
    assert conflict.get_json()["code"] == "idempotency_key_conflict"
    assert len(queued) == 1
    assert count_studies(app) == 1


def test_same_key_other_categories_is_conflict(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    upload_with_key(client, token, "exam-45", categories=("lung",))
    conflict = upload_with_key(client, token, "exam-45", categories=("bone",))
    assert conflict.status_code == 409
    assert conflict.get_json()["code"] == "idempotency_key_conflict"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_keys_are_per_clinic(app, client, make_clinic, make_api_key, queued):
    token_a = make_api_key(make_clinic("Clínica A"))
    token_b = make_api_key(make_clinic("Clínica B"))
    study_a = upload_with_key(client, token_a, "exam-46")
    study_b = upload_with_key(client, token_b, "exam-46", data=OTHER_ZIP)
    assert study_a.status_code == 202
    assert study_b.status_code == 202
    assert study_a.get_json()["id"] != study_b.get_json()["id"]
    assert count_studies(app) == 2


def test_uploads_without_key_are_independent(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    fields = {"file": (io.BytesIO(SMALL_ZIP), "study.zip")}
    first = post_multipart(client, "/api/studies/", fields, auth(token))
    fields = {"file": (io.BytesIO(SMALL_ZIP), "study.zip")}
    second = post_multipart(client, "/api/studies/", fields, auth(token))
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] != second.get_json()["id"]


def test_key_of_deleted_study_is_conflict(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload_with_key(client, token, "exam-47").get_json()["id"]
    assert client.delete(f"/api/studies/{study_id}/", headers=auth(token)).status_code == 204
    again = upload_with_key(client, token, "exam-47")
    assert again.status_code == 409
    assert again.get_json()["code"] == "idempotency_key_conflict"


@pytest.mark.parametrize("key", ["", "a" * 256, "chave com espaço"])
def test_invalid_key_is_rejected(client, make_clinic, make_api_key, queued, key):
    token = make_api_key(make_clinic())
    response = upload_with_key(client, token, key)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert body["errors"][0]["location"] == "header"
    assert queued == []


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("data", "status"), [(SMALL_ZIP, 200), (OTHER_ZIP, 409)], ids=["same_zip", "other_zip"]
)
def test_key_claimed_concurrently(
    app, client, make_clinic, make_api_key, queued, monkeypatch, data, status
):
    """A request that misses the first lookup loses at the unique constraint and replays."""
    from portal.studies import services

    token = make_api_key(make_clinic())
    first = upload_with_key(client, token, "exam-48")
    real_lookup = services.study_for_idempotency_key
    lookups = []

    def lookup_that_misses_once(clinic, key, fingerprint):
        lookups.append(key)
        if len(lookups) == 1:
            # As if the other request had not committed yet when this one looked.
            return None
        return real_lookup(clinic, key, fingerprint)

    monkeypatch.setattr(services, "study_for_idempotency_key", lookup_that_misses_once)
    again = upload_with_key(client, token, "exam-48", data=data)
    assert lookups == ["exam-48", "exam-48"]
    assert again.status_code == status
    if status == 200:
        assert again.get_json()["id"] == first.get_json()["id"]
    else:
        assert again.get_json()["code"] == "idempotency_key_conflict"
    assert count_studies(app) == 1
    assert len(queued) == 1
