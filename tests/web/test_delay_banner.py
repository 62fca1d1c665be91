"""The banner that warns doctors of delayed processing, without technical detail."""

import io
import uuid
from datetime import timedelta

import pytest

from tests.web.conftest import post_multipart, zip_bytes


def upload(client, token):
    return post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        {"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    ).get_json()["id"]


def age_queued_attempt(app, study_id, *, seconds):
    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        attempt = db.session.get(Study, uuid.UUID(study_id)).latest_attempt
        attempt.queued_at = utcnow() - timedelta(seconds=seconds)
        db.session.commit()


def status(client, token, study_id):
    return client.get(
        f"/api/studies/{study_id}/status/",
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    ).get_json()


def test_no_banner_for_a_fresh_queue(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token)
    age_queued_attempt(app, study_id, seconds=5)
    assert status(client, token, study_id)["delayed"] is False


def test_banner_when_a_study_waits_too_long(
    app, client, make_clinic, make_api_key, make_user, login, queued
):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload(client, token)
    age_queued_attempt(
        app, study_id, seconds=app.config["PORTAL_SETTINGS"].queue_delay_warning_s + 60
    )

    assert status(client, token, study_id)["delayed"] is True
    page_client = login(make_user(clinic_id), test_client=app.test_client())
    partial = page_client.get(f"/studies/{study_id}/status", headers={"Accept-Language": "en"})
    text = partial.get_data(as_text=True)
    assert 'id="delay-banner"' in text
    assert "taking longer than usual" in text
    assert "inference" not in text.lower()


def test_banner_while_the_provider_is_down(app, client, make_clinic, make_api_key, queued):
    from portal.breaker import inference_breaker

    token = make_api_key(make_clinic())
    study_id = upload(client, token)
    settings = app.config["PORTAL_SETTINGS"]
    with app.app_context():
        breaker = inference_breaker(settings)
        for _failure in range(settings.inference_breaker_failures):
            breaker.record_failure()
        assert breaker.is_open()
    assert status(client, token, study_id)["delayed"] is True


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_queue_position_counts_every_clinic(app, client, make_clinic, make_api_key, queued):
    token_a = make_api_key(make_clinic("Clínica A"))
    token_b = make_api_key(make_clinic("Clínica B"))
    earlier_of_b = upload(client, token_b)
    later_of_a = upload(client, token_a)
    age_queued_attempt(app, earlier_of_b, seconds=120)
    age_queued_attempt(app, later_of_a, seconds=60)

    assert status(client, token_a, later_of_a)["queue_position"] == 2
    assert status(client, token_b, earlier_of_b)["queue_position"] == 1
