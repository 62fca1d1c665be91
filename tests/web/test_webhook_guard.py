"""The webhook address guard: every non-public address class is rejected before any send.

Name resolution is faked by replacing `socket.getaddrinfo`, so no DNS query leaves the
machine. Each test also records every `socket.connect` and asserts that none happened;
the autouse loopback guard in tests/conftest.py would fail a connection elsewhere too.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid

import pytest

from portal.webhooks import guard

#: One address of each class the guard rejects, with the reason it must name.
REJECTED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.9", "private"),
    ("192.168.1.10", "private"),
    ("fc00::5", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.10.20", "link_local"),
    ("fe80::1", "link_local"),
    ("224.0.0.251", "multicast"),
    ("239.1.1.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "metadata"),
    ("2002:c0a8:0101::1", "private"),
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("240.0.0.1", "private"),
    ("192.0.2.1", "private"),
]

PUBLIC_ADDRESS = "93.184.216.34"


def fake_resolution(monkeypatch, *addresses: str) -> list[str]:
    """Make every host name resolve to `addresses`; return the list of names looked up."""
    looked_up = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        looked_up.append(host)
        results = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                results.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 443, 0, 0))
                )
            else:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 443)))
        return results

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.fixture
def connections(monkeypatch):
    """Record every connect attempt of any socket, and refuse it."""
    attempts = []

    def record(sock, address):
        attempts.append(address)
        raise ConnectionRefusedError("the webhook guard test allows no connection")

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket.socket, "connect_ex", record)
    return attempts


@pytest.mark.parametrize(("address", "reason"), REJECTED_ADDRESSES)
def test_guard_rejects_address_class(monkeypatch, connections, address, reason):
    looked_up = fake_resolution(monkeypatch, address)
    with pytest.raises(guard.UrlRejected) as rejected:
        guard.resolve_target("https://hooks.example.com/in", allow_loopback_http=False)
    assert rejected.value.code == guard.ADDRESS_NOT_ALLOWED
    assert rejected.value.reason == reason
    assert looked_up == ["hooks.example.com"]
    assert connections == []


@pytest.mark.parametrize(("address", "reason"), REJECTED_ADDRESSES)
def test_guard_rejects_ip_literal_url(monkeypatch, connections, address, reason):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(guard.UrlRejected) as rejected:
        guard.resolve_target(f"https://{host}/in", allow_loopback_http=False)
    assert rejected.value.code == guard.ADDRESS_NOT_ALLOWED
    assert rejected.value.reason == reason
    assert connections == []


def test_guard_rejects_one_private_among_public(monkeypatch, connections):
    fake_resolution(monkeypatch, PUBLIC_ADDRESS, "10.0.0.7")
    with pytest.raises(guard.UrlRejected) as rejected:
        guard.resolve_target("https://hooks.example.com/in", allow_loopback_http=False)
    assert rejected.value.reason == "private"
    assert connections == []


def test_guard_accepts_public_address(monkeypatch, connections):
    fake_resolution(monkeypatch, PUBLIC_ADDRESS, "2606:2800:220:1::248")
    target = guard.resolve_target(
        "https://Hooks.Example.com:8443/in?x=1", allow_loopback_http=False
    )
    assert target.scheme == "https"
    assert target.host == "hooks.example.com"
    assert target.port == 8443
    assert target.path == "/in?x=1"
    assert target.addresses == (PUBLIC_ADDRESS, "2606:2800:220:1::248")
    assert connections == []


def test_dev_setting_allows_only_127_0_0_1(monkeypatch, connections):
    target = guard.resolve_target("http://127.0.0.1:8080/hook", allow_loopback_http=True)
    assert target.addresses == ("127.0.0.1",)
    assert target.scheme == "http"
    with pytest.raises(guard.UrlRejected) as other_loopback:
        guard.resolve_target("https://127.0.0.2/hook", allow_loopback_http=True)
    assert other_loopback.value.reason == "loopback"
    with pytest.raises(guard.UrlRejected) as ipv6_loopback:
        guard.resolve_target("https://[::1]/hook", allow_loopback_http=True)
    assert ipv6_loopback.value.reason == "loopback"
    fake_resolution(monkeypatch, "10.0.0.1")
    with pytest.raises(guard.UrlRejected) as private:
        guard.resolve_target("https://hooks.example.com/", allow_loopback_http=True)
    assert private.value.reason == "private"
    assert connections == []


@pytest.mark.parametrize(
    ("url", "allow_loopback_http", "code"),
    [
        ("http://127.0.0.1:8080/hook", False, guard.HTTPS_REQUIRED),
        ("http://hooks.example.com/hook", True, guard.HTTPS_REQUIRED),
        ("http://localhost/hook", True, guard.HTTPS_REQUIRED),
        ("ftp://hooks.example.com/hook", False, guard.INVALID_URL),
        ("https://user:pass@hooks.example.com/hook", False, guard.INVALID_URL),
        ("https://hooks.example.com/hook#part", False, guard.INVALID_URL),
        ("https:///hook", False, guard.INVALID_URL),
        ("https://hooks.example.com:99999/", False, guard.INVALID_URL),
        ("https://hooks.example.com/a b", False, guard.INVALID_URL),
        ("", False, guard.INVALID_URL),
        ("https://hooks.example.com/" + "a" * 2000, False, guard.INVALID_URL),
    ],
)
def test_guard_rejects_bad_url_before_resolving(
    monkeypatch, connections, url, allow_loopback_http, code
):
    looked_up = fake_resolution(monkeypatch, PUBLIC_ADDRESS)
    with pytest.raises(guard.UrlRejected) as rejected:
        guard.resolve_target(url, allow_loopback_http=allow_loopback_http)
    assert rejected.value.code == code
    assert looked_up == []
    assert connections == []


def test_unresolvable_host_is_rejected(monkeypatch, connections):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(guard.UrlRejected) as rejected:
        guard.resolve_target("https://nowhere.example.com/", allow_loopback_http=False)
    assert rejected.value.code == guard.HOST_NOT_FOUND
    assert connections == []


@pytest.mark.parametrize(("address", "reason"), REJECTED_ADDRESSES)
def test_delivery_to_rejected_address_sends_nothing(
    app, make_clinic, monkeypatch, connections, address, reason
):
    """A URL registered while public that now resolves elsewhere fails without a send."""
    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.delivery import deliver_endpoint
    from portal.webhooks.models import DeliveryStatus, WebhookDelivery

    clinic_id = make_clinic()
    fake_resolution(monkeypatch, PUBLIC_ADDRESS)
    endpoint_id, delivery_id = _endpoint_with_delivery(app, clinic_id)

    fake_resolution(monkeypatch, address)
    with app.app_context():
        result = deliver_endpoint(endpoint_id, settings=app.config["PORTAL_SETTINGS"])
        assert result is not None
        assert result.sent == 1
        with all_clinics():
            delivery = db.session.get(WebhookDelivery, delivery_id)
            assert delivery.status == DeliveryStatus.PENDING
            assert delivery.attempt_count == 1
            assert delivery.last_error == guard.ADDRESS_NOT_ALLOWED
            assert delivery.last_response_status is None
            assert delivery.next_attempt_at > utcnow()
    assert connections == []


def _endpoint_with_delivery(app, clinic_id):
    """Register an https endpoint for `clinic_id` and add one pending delivery to it."""
    from portal.clinics.models import Clinic
    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics
    from portal.webhooks.models import WebhookDelivery, WebhookEvent
    from portal.webhooks.services import create_endpoint

    settings = app.config["PORTAL_SETTINGS"]
    with app.app_context(), all_clinics():
        clinic = db.session.get(Clinic, clinic_id)
        endpoint, _secret = create_endpoint(
            clinic,
            url="https://hooks.example.com/in",
            events=[WebhookEvent.STUDY_FAILED.value],
            created_by=None,
            secret_key=settings.secret_key,
            allow_loopback_http=False,
        )
        study = Study(clinic_id=clinic_id)
        db.session.add(study)
        db.session.flush()
        now = utcnow()
        delivery = WebhookDelivery(
            clinic_id=clinic_id,
            endpoint_id=endpoint.id,
            event_id=uuid.uuid4(),
            event_type=WebhookEvent.STUDY_FAILED,
            study_id=study.id,
            payload="{}",
            created_at=now,
            next_attempt_at=now,
        )
        db.session.add(delivery)
        db.session.commit()
        return endpoint.id, delivery.id
