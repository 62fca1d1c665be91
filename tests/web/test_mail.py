"""Invitation e-mails over a real SMTP server (aiosmtpd on 127.0.0.1), and the outbox."""

from __future__ import annotations

import pytest

from tests.support.servers import free_port
from tests.support.smtp import run_smtp_server
from tests.web.clinic_helpers import LINK_PATTERN, outbox_messages


@pytest.fixture
def admin_client(make_app, make_clinic, login):
    """Return a factory of (app, client signed in as an admin of a clinic) for given settings."""

    def build(**overrides):
        from portal.clinics.models import Identity, Membership, Role, User
        from portal.clinics.services import create_clinic
        from portal.extensions import db
        from portal.tenancy import all_clinics

        app = make_app(**overrides)
        with app.app_context(), all_clinics():
            clinic = create_clinic("Clínica Correio", seat_limit=5)
            user = User(email="admin@correio.example", is_email_verified=True)
            db.session.add(Identity(issuer="http://idp.test", subject="admin", user=user))
            db.session.add(Membership(user=user, clinic=clinic, role=Role.ADMIN))
            db.session.commit()
            user_id = user.id
        client = app.test_client()
        login(user_id, test_client=client)
        return app, client

    return build


def test_invitation_is_delivered_over_smtp(admin_client):
    with run_smtp_server() as smtp:
        app, client = admin_client(
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_tls="none",
            mail_sender="Vizier Med <convites@vizier.example>",
            portal_base_url="https://portal.vizier.example",
        )
        response = client.post(
            "/clinic/invitations", data={"email": "maria@correio.example", "role": "doctor"}
        )
        assert response.status_code == 302
        assert len(smtp.received) == 1
        mail = smtp.received[0]
        assert mail.sender == "convites@vizier.example"
        assert mail.recipients == ["maria@correio.example"]
        assert mail.message["Subject"] == "Convite para Clínica Correio no Vizier Med"
        assert mail.message["Content-Language"] == "pt-BR"
        text = mail.message.get_body(preferencelist=("plain",)).get_content()
        html = mail.message.get_body(preferencelist=("html",)).get_content()
        link = LINK_PATTERN.search(text).group(0)
        assert link.startswith("https://portal.vizier.example/invitations/")
        assert link in html
        assert outbox_messages(app) == []


# The test server has no certificate, so it accepts the login without TLS and warns.
NO_TLS_LOGIN_WARNING = "ignore:Requiring AUTH while not requiring TLS:UserWarning"


@pytest.mark.filterwarnings(NO_TLS_LOGIN_WARNING)
def test_smtp_login_is_used(admin_client):
    with run_smtp_server(require_login=("portal", "s3nha")) as smtp:
        _app, client = admin_client(
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_tls="none",
            smtp_username="portal",
            smtp_password="s3nha",
        )
        client.post("/clinic/invitations", data={"email": "a@correio.example", "role": "doctor"})
        assert [mail.recipients for mail in smtp.received] == [["a@correio.example"]]


def test_refused_delivery_rolls_back_invitation(admin_client):
    with run_smtp_server(reject_recipients=True) as smtp:
        app, client = admin_client(smtp_host=smtp.host, smtp_port=smtp.port, smtp_tls="none")
        response = client.post(
            "/clinic/invitations",
            data={"email": "a@correio.example", "role": "doctor"},
            headers={"Accept-Language": "en"},
        )
        assert response.status_code == 502
        assert "did not accept the message" in response.get_data(as_text=True)
        assert smtp.received == []
    page = client.get("/clinic/").get_data(as_text=True)
    assert "a@correio.example" not in page


def test_unreachable_smtp_server_is_reported(admin_client):
    _app, client = admin_client(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_tls="none")
    response = client.post(
        "/api/clinics/clinics/invite/",
        json={"email": "a@correio.example", "role": "doctor"},
        headers={"Accept-Language": "en"},
    )
    # The API takes no cookies, so the page session does not authenticate it.
    assert response.status_code == 401
    page_response = client.post(
        "/clinic/invitations", data={"email": "a@correio.example", "role": "doctor"}
    )
    assert page_response.status_code == 502


def test_without_smtp_host_mail_goes_to_outbox(admin_client, caplog):
    app, client = admin_client()
    with caplog.at_level("INFO", logger="portal.mail"):
        client.post("/clinic/invitations", data={"email": "a@correio.example", "role": "admin"})
    messages = outbox_messages(app)
    assert len(messages) == 1
    assert messages[0]["To"] == "a@correio.example"
    outbox = str(app.config["PORTAL_SETTINGS"].outbox_dir)
    assert any(outbox in record.getMessage() for record in caplog.records)
    assert not any("a@correio.example" in record.getMessage() for record in caplog.records)
