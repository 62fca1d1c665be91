"""`GET /api/studies/`: newest first, cursor pages, filters, bounds and tenant isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.web.test_api_studies import auth, upload

BASE_TIME = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def clinic_with_studies(app, client, make_clinic, make_api_key, queued):
    """Upload five studies to clinic A, one hour apart, and fail the second newest.

    Returns the API key and the study ids, newest first.
    """
    from portal.extensions import db
    from portal.studies.models import Study

    token = make_api_key(make_clinic("Clínica A"))
    study_ids = [upload(client, token).get_json()["id"] for _ in range(5)]
    with app.app_context():
        for hours, study_id in enumerate(study_ids):
            db.session.get(Study, uuid.UUID(study_id)).created_at = BASE_TIME + timedelta(
                hours=hours
            )
        db.session.get(Study, uuid.UUID(study_ids[3])).latest_attempt.fail("no_dicom_found")
        db.session.commit()
    return token, list(reversed(study_ids))


def ids_of(response) -> list[str]:
    return [item["id"] for item in response.get_json()["items"]]


def walk_pages(client, path: str, token: str) -> tuple[list[str], int]:
    """Follow `next` links from `path`; return every study id seen and the page count."""
    seen = []
    pages = 0
    while path is not None:
        response = client.get(path, headers=auth(token))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        seen += [item["id"] for item in body["items"]]
        path = body["next"]
        pages += 1
    return seen, pages


def test_list_is_newest_first(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    response = client.get("/api/studies/", headers=auth(token))
    assert response.status_code == 200
    assert ids_of(response) == newest_first
    assert response.get_json()["next"] is None
    assert response.get_json()["limit"] == 20


def test_cursor_walks_every_page_once(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    seen, pages = walk_pages(client, "/api/studies/?limit=2", token)
    assert pages == 3
    assert seen == newest_first


def test_cursor_orders_equal_times_by_id(app, client, clinic_with_studies):
    from portal.extensions import db
    from portal.studies.models import Study

    token, newest_first = clinic_with_studies
    with app.app_context():
        for study_id in newest_first:
            db.session.get(Study, uuid.UUID(study_id)).created_at = BASE_TIME
        db.session.commit()
    seen, pages = walk_pages(client, "/api/studies/?limit=1", token)
    assert pages == 5
    assert sorted(seen) == sorted(newest_first)
    assert len(seen) == len(set(seen))


def test_next_link_keeps_filters(client, clinic_with_studies):
    token, _newest_first = clinic_with_studies
    response = client.get(
        "/api/studies/?limit=1&status=uploaded&created_after=2026-03-02T12:30:00%2B00:00",
        headers=auth(token),
    )
    next_link = response.get_json()["next"]
    assert next_link.startswith("/api/studies/?")
    assert "status=uploaded" in next_link
    assert "created_after=2026-03-02T12:30:00%2B00:00" in next_link
    assert "limit=1" in next_link
    assert "cursor=" in next_link


def test_status_filter_uses_latest_attempt(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    failed = client.get("/api/studies/?status=failed", headers=auth(token))
    assert ids_of(failed) == [newest_first[1]]
    both = client.get("/api/studies/?status=failed&status=uploaded", headers=auth(token))
    assert ids_of(both) == newest_first
    uploaded = client.get("/api/studies/?status=uploaded", headers=auth(token))
    assert newest_first[1] not in ids_of(uploaded)
    assert len(ids_of(uploaded)) == 4


def test_date_range_filter(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    # Uploaded at 12:00, 13:00, 14:00, 15:00 and 16:00; the range is [13:00, 15:00).
    response = client.get(
        "/api/studies/",
        query_string={
            "created_after": "2026-03-02T13:00:00+00:00",
            "created_before": "2026-03-02T12:00:00-03:00",
        },
        headers=auth(token),
    )
    assert response.status_code == 200
    assert ids_of(response) == newest_first[2:4]


def test_deleted_study_is_not_listed(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    assert client.delete(f"/api/studies/{newest_first[0]}/", headers=auth(token)).status_code == 204
    assert ids_of(client.get("/api/studies/", headers=auth(token))) == newest_first[1:]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "many"])
def test_limit_out_of_bounds_is_rejected(client, clinic_with_studies, limit):
    token, _newest_first = clinic_with_studies
    response = client.get(f"/api/studies/?limit={limit}", headers=auth(token))
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert [error["field"] for error in body["errors"]] == ["limit"]
    assert body["errors"][0]["location"] == "query"


def test_largest_limit_is_accepted(client, clinic_with_studies):
    token, newest_first = clinic_with_studies
    response = client.get("/api/studies/?limit=100", headers=auth(token))
    assert response.status_code == 200
    assert ids_of(response) == newest_first


@pytest.mark.parametrize("cursor", ["garbage", "eyJjIjogMX0", "e30"])
def test_forged_cursor_is_rejected(client, clinic_with_studies, cursor):
    token, _newest_first = clinic_with_studies
    response = client.get(f"/api/studies/?cursor={cursor}", headers=auth(token))
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_cursor"


def test_invalid_filters_are_rejected_per_field(client, clinic_with_studies):
    token, _newest_first = clinic_with_studies
    response = client.get(
        "/api/studies/?status=done&created_after=2026-03-02T13:00:00",
        headers={**auth(token), "Accept-Language": "en"},
    )
    assert response.status_code == 400
    errors = {error["field"]: error for error in response.get_json()["errors"]}
    assert errors["status.0"]["code"] == "invalid_choice"
    assert "'succeeded'" in errors["status.0"]["message"]
    assert " or " not in errors["status.0"]["message"]
    assert errors["created_after"]["code"] == "invalid_value"
    assert "UTC offset" in errors["created_after"]["message"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_list_shows_only_own_clinic(client, make_clinic, make_api_key, queued):
    token_a = make_api_key(make_clinic("Clínica A"))
    token_b = make_api_key(make_clinic("Clínica B"))
    own = [upload(client, token_a).get_json()["id"] for _ in range(3)]
    other = upload(client, token_b).get_json()["id"]
    seen, _pages = walk_pages(client, "/api/studies/?limit=2", token_a)
    assert sorted(seen) == sorted(own)
    assert other not in seen
    assert ids_of(client.get("/api/studies/", headers=auth(token_b))) == [other]
