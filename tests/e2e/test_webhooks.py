"""A webhook delivered by the real worker when a study fails, on the real processes."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile

import pytest
import requests

from scripts.devstack import run_flask
from tests.support.stack import running_stack
from tests.support.webhooks import Receiver, expected_signature

pytestmark = pytest.mark.e2e


def register_endpoint(env: dict, clinic_id: str, url: str) -> str:
    """Register `url` for the clinic as the admin page does; return the secret shown once."""
    from portal.app import create_app
    from portal.clinics.models import Clinic
    from portal.config import Settings
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.services import create_endpoint

    settings = Settings.from_env(env)
    app = create_app(settings)
    try:
        with app.app_context(), all_clinics():
            _endpoint, secret = create_endpoint(
                db.session.get(Clinic, uuid.UUID(clinic_id)),
                url=url,
                events=["study.succeeded", "study.failed"],
                created_by=None,
                secret_key=settings.secret_key,
                allow_loopback_http=settings.webhook_allow_loopback_http,
            )
            db.session.commit()
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return secret


def not_dicom_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", b"no DICOM here")
    return buffer.getvalue()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_worker_delivers_failed_study_event(tmp_path, backend):
    with (
        Receiver() as receiver,
        running_stack(tmp_path, backend=backend, WEBHOOK_ALLOW_LOOPBACK_HTTP="true") as stack,
    ):
        env = stack.env
        base_url = env["PORTAL_BASE_URL"]
        clinic_id = run_flask(env, "clinics", "create", "Clínica A", "--seats", "3")
        key = run_flask(env, "api-keys", "create", "--clinic", clinic_id, "--name", "RIS")
        secret = register_endpoint(env, clinic_id, receiver.url)

        created = requests.post(
            f"{base_url}/api/studies/",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("exame.zip", not_dicom_zip(), "application/zip")},
            timeout=60,
        )
        assert created.status_code == 202, created.text
        study_id = created.json()["id"]

        deadline = time.monotonic() + 120
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(receiver.requests) == 1, "no webhook delivery within 120 s"

    [request] = receiver.requests
    event = json.loads(request["body"])
    assert event["type"] == "study.failed"
    assert event["status"] == "failed"
    assert event["study_id"] == study_id
    assert event["attempt"] == 1
    assert request["headers"]["Vizier-Webhook-Id"] == event["id"]
    assert request["headers"]["Vizier-Webhook-Signature"] == expected_signature(secret, request)
