"""Webhooks end to end: admin pages, events at terminal statuses, and delivery to a receiver.

The receiver is a real HTTP server on 127.0.0.1, reached with WEBHOOK_ALLOW_LOOPBACK_HTTP
on. Delivery runs are called directly with a test clock, so retries need no waiting.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.support.webhooks import Receiver, expected_signature
from tests.web.conftest import post_multipart, zip_bytes

SECRET_PATTERN = re.compile(r'id="new-webhook-secret" class="secret">(whsec_[A-Za-z0-9_\-]+)<')


class Clock:
    """A settable clock for `deliver_endpoint`."""

    def __init__(self):
        from portal.db_types import utcnow

        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


@pytest.fixture
def queued_endpoints(monkeypatch):
    """Record the endpoints queued for delivery instead of running the task."""
    calls = []
    monkeypatch.setattr(
        "portal.tasks.queue_webhook_deliveries",
        lambda endpoint_ids, **kwargs: calls.append([str(i) for i in endpoint_ids]),
    )
    return calls


@pytest.fixture
def hooks_app(make_app):
    return make_app(webhook_allow_loopback_http=True)


@pytest.fixture
def clinic(hooks_app, make_clinic):
    return make_clinic("Clínica A", seats=5)


@pytest.fixture
def admin(hooks_app, clinic, make_user, login):
    client = hooks_app.test_client()
    login(make_user(clinic, role="admin", email="admin@a.example"), test_client=client)
    return client


def register(admin, url, events=("study.succeeded", "study.failed")):
    return admin.post("/clinic/webhooks/", data={"url": url, "events": list(events)})


def registered(admin, url, events=("study.succeeded", "study.failed")) -> tuple[str, str]:
    """Register `url` through the page; return (endpoint id, secret shown once)."""
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookEndpoint

    response = register(admin, url, events)
    assert response.status_code == 201, response.get_data(as_text=True)
    secret = SECRET_PATTERN.search(response.get_data(as_text=True)).group(1)
    with admin.application.app_context(), all_clinics():
        endpoint_id = db.session.scalars(
            select(WebhookEndpoint.id).where(WebhookEndpoint.url == url)
        ).one()
    return str(endpoint_id), secret


def upload_study(app, clinic_id, make_api_key):
    """Upload a study through the API; return (study id, attempt id)."""
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    token = make_api_key(clinic_id)
    body = post_multipart(
        app.test_client(),
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        {"Authorization": f"Bearer {token}"},
    ).get_json()
    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(body["id"]))
        return study.id, study.latest_attempt.id


def finish_attempt(app, attempt_id, status):
    """Drive the attempt to a terminal status through a lease, as the worker steps do."""
    from portal.extensions import db
    from portal.leases import CONVERT, WRITE_RESULTS, claim
    from portal.studies.models import Attempt, StudyStatus
    from portal.tenancy import set_clinic_of

    with app.app_context():
        set_clinic_of(Attempt, attempt_id)
        if status == StudyStatus.SUCCEEDED:
            db.session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(status=StudyStatus.WRITING_RESULTS)
            )
            db.session.commit()
            lease = claim(attempt_id, WRITE_RESULTS, duration_s=30)
        else:
            lease = claim(attempt_id, CONVERT, duration_s=30)
        assert lease is not None
        if status == StudyStatus.FAILED:
            lease.finish(StudyStatus.FAILED, error_code="internal_error", error_detail={})
        else:
            lease.finish(status)


def deliveries_of(app, endpoint_id):
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookDelivery

    with app.app_context(), all_clinics():
        return db.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
            .order_by(WebhookDelivery.created_at)
        ).all()


def run_deliveries(app, endpoint_id, clock):
    from portal.webhooks.delivery import deliver_endpoint

    with app.app_context():
        return deliver_endpoint(
            uuid.UUID(endpoint_id), settings=app.config["PORTAL_SETTINGS"], now=clock
        )


# Pages.


def test_doctor_cannot_open_webhooks(hooks_app, clinic, make_user, login):
    client = login(make_user(clinic, email="medica@a.example"), test_client=hooks_app.test_client())
    assert client.get("/clinic/webhooks/").status_code == 403
    assert register(client, "http://127.0.0.1:9/x").status_code == 403


def test_register_shows_secret_once(hooks_app, admin, receiver):
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookEndpoint
    from portal.webhooks.signing import decrypt_secret

    response = register(admin, receiver.url, events=["study.failed"])
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    secret = SECRET_PATTERN.search(response.get_data(as_text=True)).group(1)
    with hooks_app.app_context(), all_clinics():
        endpoint = db.session.scalars(select(WebhookEndpoint)).one()
        assert endpoint.events == ["study.failed"]
        assert endpoint.is_active is True
        assert secret.encode() not in endpoint.secret_encrypted
        key = hooks_app.config["PORTAL_SETTINGS"].secret_key
        assert decrypt_secret(endpoint.secret_encrypted, secret_key=key) == secret
        endpoint_id = endpoint.id
    listing = admin.get("/clinic/webhooks/").get_data(as_text=True)
    assert receiver.url in listing
    assert secret not in listing
    assert secret[:10] in listing
    page = admin.get(f"/clinic/webhooks/{endpoint_id}").get_data(as_text=True)
    assert secret not in page
    assert "Vizier-Webhook-Signature" in admin.get("/clinic/webhooks/").get_data(as_text=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/in", "https://"),
        ("https://user:secret@hooks.example.com/in", "https://"),
        ("https://10.0.0.8/in", "10.0.0.8"),
        ("https://169.254.169.254/latest", "cloud metadata service"),
    ],
)
def test_register_rejects_bad_url(hooks_app, admin, url, message):
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookEndpoint

    admin.post("/auth/locale", data={"locale": "en"})
    response = register(admin, url)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert 'role="alert"' in body
    if message == "10.0.0.8":
        assert "not public (private network)" in body
    else:
        assert message in body
    with hooks_app.app_context(), all_clinics():
        assert db.session.scalars(select(WebhookEndpoint)).all() == []


def test_register_needs_an_event(admin, receiver):
    response = register(admin, receiver.url, events=[])
    assert response.status_code == 400


def test_loopback_http_rejected_without_setting(app, make_clinic, make_user, login):
    clinic_id = make_clinic()
    client = login(
        make_user(clinic_id, role="admin", email="adm@a.example"), test_client=app.test_client()
    )
    response = register(client, "http://127.0.0.1:8080/hook")
    assert response.status_code == 400


def test_disable_enable_and_delete(hooks_app, admin, receiver, queued_endpoints):
    endpoint_id, _secret = registered(admin, receiver.url)
    assert admin.post(f"/clinic/webhooks/{endpoint_id}/disable").status_code == 302
    page = admin.get(f"/clinic/webhooks/{endpoint_id}").get_data(as_text=True)
    assert 'data-active="false"' in page
    assert admin.post(f"/clinic/webhooks/{endpoint_id}/enable").status_code == 302
    assert queued_endpoints == [[endpoint_id]]
    page = admin.get(f"/clinic/webhooks/{endpoint_id}").get_data(as_text=True)
    assert 'data-active="true"' in page
    assert admin.get(f"/clinic/webhooks/{endpoint_id}/delete").status_code == 200
    assert admin.post(f"/clinic/webhooks/{endpoint_id}/delete").status_code == 302
    assert admin.get(f"/clinic/webhooks/{endpoint_id}").status_code == 404


# Events.


def test_terminal_statuses_create_deliveries(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus

    both_id, _ = registered(admin, receiver.url)
    failed_only_id, _ = registered(admin, receiver.url + "?only=failed", events=["study.failed"])
    disabled_id, _ = registered(admin, receiver.url + "?disabled=1")
    admin.post(f"/clinic/webhooks/{disabled_id}/disable")

    _study, succeeded_attempt = upload_study(hooks_app, clinic, make_api_key)
    finish_attempt(hooks_app, succeeded_attempt, StudyStatus.SUCCEEDED)
    assert queued_endpoints == [[both_id]]

    failed_study, failed_attempt = upload_study(hooks_app, clinic, make_api_key)
    finish_attempt(hooks_app, failed_attempt, StudyStatus.FAILED)
    assert sorted(queued_endpoints[1]) == sorted([both_id, failed_only_id])

    both = deliveries_of(hooks_app, both_id)
    assert [d.event_type.value for d in both] == ["study.succeeded", "study.failed"]
    failed_only = deliveries_of(hooks_app, failed_only_id)
    assert [d.event_type.value for d in failed_only] == ["study.failed"]
    assert failed_only[0].event_id == both[1].event_id
    assert deliveries_of(hooks_app, disabled_id) == []
    body = json.loads(both[1].payload)
    assert set(body) == {"id", "type", "study_id", "status", "attempt", "occurred_at"}
    assert body["type"] == "study.failed"
    assert body["status"] == "failed"
    assert body["study_id"] == str(failed_study)
    assert body["attempt"] == 1
    assert body["id"] == str(both[1].event_id)


def test_cancelled_study_sends_no_event(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    endpoint_id, _ = registered(admin, receiver.url)
    study_id, _attempt = upload_study(hooks_app, clinic, make_api_key)
    response = admin.post(f"/studies/{study_id}/cancel")
    assert response.status_code == 302
    assert deliveries_of(hooks_app, endpoint_id) == []
    assert queued_endpoints == []


# Delivery to the receiver.


def test_delivery_is_signed_and_retried(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus
    from portal.webhooks.models import DeliveryStatus

    endpoint_id, secret = registered(admin, receiver.url)
    study_id, attempt_id = upload_study(hooks_app, clinic, make_api_key)
    finish_attempt(hooks_app, attempt_id, StudyStatus.SUCCEEDED)
    receiver.statuses = [500, 200]
    clock = Clock()

    first = run_deliveries(hooks_app, endpoint_id, clock)
    assert first.sent == 1
    [delivery] = deliveries_of(hooks_app, endpoint_id)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempt_count == 1
    assert delivery.last_response_status == 500
    assert delivery.last_error == "http_status"
    wait_s = (delivery.next_attempt_at - clock.now).total_seconds()
    assert 15 <= wait_s <= 30
    assert first.next_due_at == delivery.next_attempt_at

    too_early = run_deliveries(hooks_app, endpoint_id, clock)
    assert too_early.sent == 0
    assert len(receiver.requests) == 1

    clock.advance(seconds=31)
    second = run_deliveries(hooks_app, endpoint_id, clock)
    assert second.sent == 1
    assert second.next_due_at is None
    [delivery] = deliveries_of(hooks_app, endpoint_id)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 2
    assert delivery.last_response_status == 200
    assert delivery.last_error is None

    assert len(receiver.requests) == 2
    for request in receiver.requests:
        headers = request["headers"]
        assert request["path"] == "/hooks/vizier"
        assert headers["Content-Type"] == "application/json"
        assert headers["Vizier-Webhook-Id"] == str(delivery.event_id)
        assert headers["Vizier-Webhook-Signature"] == expected_signature(secret, request)
        assert headers["Vizier-Webhook-Signature"] != expected_signature("whsec_other", request)
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    event = receiver.events()[0]
    assert event["study_id"] == str(study_id)
    assert event["status"] == "succeeded"

    history = admin.get(f"/clinic/webhooks/{endpoint_id}/deliveries").get_data(as_text=True)
    assert f'data-delivery-id="{delivery.id}" data-status="succeeded"' in history
    assert "HTTP 200" in history


def test_deliveries_keep_event_order(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus
    from portal.webhooks.models import DeliveryStatus

    endpoint_id, _secret = registered(admin, receiver.url)
    attempts = [upload_study(hooks_app, clinic, make_api_key)[1] for _ in range(3)]
    finish_attempt(hooks_app, attempts[0], StudyStatus.FAILED)
    receiver.statuses = [503]
    clock = Clock()
    run_deliveries(hooks_app, endpoint_id, clock)

    # Events N+1 and N+2 arrive while event N waits for its retry.
    finish_attempt(hooks_app, attempts[1], StudyStatus.SUCCEEDED)
    finish_attempt(hooks_app, attempts[2], StudyStatus.FAILED)
    clock.advance(seconds=1)
    waiting = run_deliveries(hooks_app, endpoint_id, clock)
    assert waiting.sent == 0
    assert len(receiver.requests) == 1
    statuses = [d.status for d in deliveries_of(hooks_app, endpoint_id)]
    assert statuses == [DeliveryStatus.PENDING] * 3

    clock.advance(seconds=60)
    done = run_deliveries(hooks_app, endpoint_id, clock)
    assert done.sent == 3
    deliveries = deliveries_of(hooks_app, endpoint_id)
    sent_ids = [request["headers"]["Vizier-Webhook-Id"] for request in receiver.requests]
    expected = [str(d.event_id) for d in deliveries]
    assert sent_ids == [expected[0], expected[0], expected[1], expected[2]]
    assert [d.status for d in deliveries] == [DeliveryStatus.SUCCEEDED] * 3


def test_redirect_is_not_followed(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus

    endpoint_id, _ = registered(admin, receiver.url)
    finish_attempt(hooks_app, upload_study(hooks_app, clinic, make_api_key)[1], StudyStatus.FAILED)
    receiver.statuses = [302]
    receiver.extra_headers = {"Location": receiver.url + "/elsewhere"}
    run_deliveries(hooks_app, endpoint_id, Clock())
    assert [request["path"] for request in receiver.requests] == ["/hooks/vizier"]
    [delivery] = deliveries_of(hooks_app, endpoint_id)
    assert delivery.last_response_status == 302
    assert delivery.last_error == "redirect_not_followed"


def test_retry_window_ends_then_next_event_goes(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus
    from portal.webhooks.models import DeliveryStatus

    endpoint_id, _ = registered(admin, receiver.url)
    for _ in range(2):
        finish_attempt(
            hooks_app, upload_study(hooks_app, clinic, make_api_key)[1], StudyStatus.FAILED
        )
    receiver.statuses = [500, 500, 500]
    clock = Clock()
    run_deliveries(hooks_app, endpoint_id, clock)
    clock.advance(hours=24)
    result = run_deliveries(hooks_app, endpoint_id, clock)
    first, second = deliveries_of(hooks_app, endpoint_id)
    assert first.status == DeliveryStatus.FAILED
    assert first.attempt_count == 2
    assert first.finished_at == clock.now
    # The second event waited past its own window, so it got one attempt and failed too.
    assert second.status == DeliveryStatus.FAILED
    assert second.attempt_count == 1
    assert result.sent == 2
    assert result.next_due_at is None
    assert len(receiver.requests) == 3


def test_connection_refused_is_retried(
    hooks_app, clinic, admin, make_api_key, queued, queued_endpoints
):
    from portal.studies.models import StudyStatus
    from portal.webhooks.models import DeliveryStatus

    with Receiver() as closed:
        url = closed.url
    endpoint_id, _ = registered(admin, url)
    finish_attempt(hooks_app, upload_study(hooks_app, clinic, make_api_key)[1], StudyStatus.FAILED)
    run_deliveries(hooks_app, endpoint_id, Clock())
    [delivery] = deliveries_of(hooks_app, endpoint_id)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_error == "connect_failed"
    assert delivery.last_response_status is None


def test_held_endpoint_is_skipped(hooks_app, admin, receiver):
    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookEndpoint

    endpoint_id, _ = registered(admin, receiver.url)
    with hooks_app.app_context(), all_clinics():
        db.session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(endpoint_id))
            .values(lease_owner="other-worker", lease_expires_at=utcnow() + timedelta(minutes=1))
        )
        db.session.commit()
    assert run_deliveries(hooks_app, endpoint_id, Clock()) is None


def test_sweeper_queues_endpoint_with_lost_task(
    hooks_app, clinic, admin, receiver, make_api_key, queued, queued_endpoints, tmp_path
):
    from portal.studies.models import StudyStatus
    from portal.sweeper import sweep
    from tests.support.queues import queue_with_messages

    endpoint_id, _ = registered(admin, receiver.url)
    finish_attempt(hooks_app, upload_study(hooks_app, clinic, make_api_key)[1], StudyStatus.FAILED)
    queued_endpoints.clear()

    with_task = queue_with_messages(tmp_path / "with.sqlite3", [{"endpoint_id": endpoint_id}])
    empty = queue_with_messages(tmp_path / "empty.sqlite3", [])

    with hooks_app.app_context():
        sweep(with_task, grace_s=0)
        assert queued_endpoints == [[]]
        sweep(empty, grace_s=0)
        assert queued_endpoints[-1] == [endpoint_id]
        # A long grace leaves a delivery that was just created to its own task.
        sweep(empty, grace_s=3600)
        assert queued_endpoints[-1] == []


def test_delivery_task_schedules_retry(
    hooks_app, clinic, admin, receiver, make_api_key, queued, monkeypatch
):
    """The task run that records a failure schedules the retry; an idle run schedules none."""
    from portal import tasks
    from portal.studies.models import StudyStatus

    scheduled = []
    monkeypatch.setattr(
        tasks,
        "queue_webhook_deliveries",
        lambda endpoint_ids, delay_s=0.0: scheduled.append(
            ([str(i) for i in endpoint_ids], delay_s)
        ),
    )
    endpoint_id, _ = registered(admin, receiver.url)
    finish_attempt(hooks_app, upload_study(hooks_app, clinic, make_api_key)[1], StudyStatus.FAILED)
    scheduled.clear()
    receiver.statuses = [500]
    with hooks_app.app_context():
        tasks.deliver_webhooks.call_local(endpoint_id=endpoint_id)
        assert len(scheduled) == 1
        assert scheduled[0][0] == [endpoint_id]
        assert 10 <= scheduled[0][1] <= 30
        tasks.deliver_webhooks.call_local(endpoint_id=endpoint_id)
        assert len(scheduled) == 1
        tasks.deliver_webhooks.call_local(endpoint_id="not-a-uuid")
    assert len(receiver.requests) == 1


def test_retry_delay_grows_and_is_capped():
    import random

    from portal.webhooks.delivery import retry_delay_s

    rng = random.Random(7)
    for attempt_count, base_s in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (30, 3600)]:
        for _ in range(20):
            delay = retry_delay_s(attempt_count, rng=rng)
            assert base_s / 2 <= delay <= base_s, (attempt_count, delay)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_webhook_rows_are_isolated_on_postgresql(
    make_app, make_clinic, make_user, login, make_api_key, queued, queued_endpoints, receiver
):
    """Row-level security hides another clinic's endpoints, and events reach only their own."""
    from sqlalchemy import text

    from portal.extensions import db
    from portal.studies.models import StudyStatus
    from portal.tenancy import set_current_clinic

    app = make_app(webhook_allow_loopback_http=True)
    clinic_a, clinic_b = make_clinic("A"), make_clinic("B")
    admin_a = login(
        make_user(clinic_a, role="admin", email="a@a.example"), test_client=app.test_client()
    )
    admin_b = login(
        make_user(clinic_b, role="admin", email="b@b.example"), test_client=app.test_client()
    )
    endpoint_a, _ = registered(admin_a, receiver.url + "?a")
    endpoint_b, _ = registered(admin_b, receiver.url + "?b")
    finish_attempt(app, upload_study(app, clinic_a, make_api_key)[1], StudyStatus.FAILED)
    assert queued_endpoints == [[endpoint_a]]
    assert admin_b.get(f"/clinic/webhooks/{endpoint_a}").status_code == 404
    with app.app_context():
        set_current_clinic(clinic_b)
        rows = db.session.execute(text("SELECT id::text FROM webhook_endpoint")).scalars().all()
        assert rows == [endpoint_b]
        assert db.session.execute(text("SELECT count(*) FROM webhook_delivery")).scalar() == 0


# Transport: the connection goes to the checked address only.


def test_transport_connects_to_checked_address_after_rebind(receiver, monkeypatch):
    """A name that resolves elsewhere after the check is not resolved again."""
    import socket

    from portal.webhooks import transport
    from portal.webhooks.guard import Target

    lookups = []

    def rebound(*args, **kwargs):
        lookups.append(args[0])
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", args[1]))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    port = receiver.server.server_port
    target = Target("http", "hooks.example.com", port, "/in?x=1", ("127.0.0.1",))
    result = transport.post(
        target, b"{}", {"Content-Type": "application/json"}, connect_timeout_s=2, read_timeout_s=2
    )
    assert result.status == 200
    assert result.error is None
    assert lookups == []
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"hooks.example.com:{port}"
    assert request["path"] == "/in?x=1"


def test_transport_checks_certificate_and_sends_sni(tmp_path):
    """HTTPS goes to the pinned address with the URL's host as SNI, and checks the certificate."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from portal.webhooks import transport
    from portal.webhooks.guard import Target

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.com")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)

    with Receiver() as receiver:
        receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
        target = Target(
            "https", "hooks.example.com", receiver.server.server_port, "/in", ("127.0.0.1",)
        )
        untrusted = transport.post(target, b"{}", {}, connect_timeout_s=2, read_timeout_s=2)
        assert untrusted.error == transport.TLS_FAILED
        assert receiver.requests == []

        trusting = ssl.create_default_context(cafile=str(cert_path))
        original = ssl.create_default_context
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ssl, "create_default_context", lambda *a, **k: trusting)
            trusted = transport.post(target, b"{}", {}, connect_timeout_s=2, read_timeout_s=2)
        assert ssl.create_default_context is original
    assert trusted.status == 200
    assert server_names == ["hooks.example.com", "hooks.example.com"]
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example.com:{target.port}"


# Audit: registering, enabling, disabling and deleting an endpoint each leave an event.


def webhook_events(app, clinic_id, watch):
    from tests.web.audit_helpers import assert_clean

    events = [event for event in watch.new_events() if event.action.startswith("webhook.")]
    for event in events:
        assert_clean(event)
    return events


def test_register_records_webhook_registered(hooks_app, clinic, admin, receiver):
    from tests.web.audit_helpers import EventWatch

    watch = EventWatch(hooks_app, clinic)
    endpoint_id, _secret = registered(admin, receiver.url, events=("study.failed",))

    (event,) = webhook_events(hooks_app, clinic, watch)
    assert event.action == "webhook.registered"
    assert event.actor_role == "admin"
    assert (event.target_type, event.target_id) == ("webhook_endpoint", endpoint_id)
    assert event.details == {"events": ["study.failed"], "scheme": "http"}


def test_enable_disable_delete_record_their_events(
    hooks_app, clinic, admin, receiver, queued_endpoints
):
    from tests.web.audit_helpers import EventWatch

    endpoint_id, _secret = registered(admin, receiver.url)
    watch = EventWatch(hooks_app, clinic)

    assert admin.post(f"/clinic/webhooks/{endpoint_id}/disable").status_code == 302
    assert admin.post(f"/clinic/webhooks/{endpoint_id}/enable").status_code == 302
    assert admin.post(f"/clinic/webhooks/{endpoint_id}/delete").status_code == 302

    events = webhook_events(hooks_app, clinic, watch)
    assert [event.action for event in events] == [
        "webhook.disabled",
        "webhook.enabled",
        "webhook.deleted",
    ]
    assert {event.target_id for event in events} == {endpoint_id}
