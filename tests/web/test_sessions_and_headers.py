"""Server-side sessions, security headers, rate limits and the API-key page."""

from __future__ import annotations

import base64
import io
import secrets
from datetime import timedelta

import pytest

from tests.web.conftest import post_multipart, zip_bytes


def end_state(app, user_id):
    from sqlalchemy import select

    from portal.auth.models import SignInSession
    from portal.extensions import db

    with app.app_context():
        return [
            (record.ended_at is not None, record.end_reason)
            for record in db.session.scalars(
                select(SignInSession).where(SignInSession.user_id == user_id)
            )
        ]


def shift_session_times(app, user_id, *, created_by=timedelta(0), seen_by=timedelta(0)):
    """Move a user's session timestamps into the past, as if time had passed."""
    from sqlalchemy import select

    from portal.auth.models import SignInSession
    from portal.extensions import db

    with app.app_context():
        for record in db.session.scalars(
            select(SignInSession).where(SignInSession.user_id == user_id)
        ):
            record.created_at -= created_by
            record.last_seen_at -= seen_by
        db.session.commit()


def test_signed_in_user_sees_studies(client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    assert client.get("/studies/").status_code == 200


def test_logout_rejects_copied_cookie(app, make_clinic, make_user, login):
    user_id = make_user(make_clinic())
    browser = login(user_id, test_client=app.test_client())
    copied_cookie = browser.get_cookie("session").value
    assert browser.get("/studies/").status_code == 200

    response = browser.post("/auth/logout")
    assert response.status_code == 302
    assert end_state(app, user_id) == [(True, "logout")]

    replay = app.test_client()
    replay.set_cookie("session", copied_cookie)
    response = replay.get("/studies/")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_cookie_without_server_session_rejected(client, make_clinic, make_user):
    user_id = make_user(make_clinic())
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["sid"] = "made-up-token"
    response = client.get("/studies/")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_idle_timeout_ends_session(app, client, make_clinic, make_user, login):
    user_id = make_user(make_clinic())
    login(user_id)
    idle = app.config["PORTAL_SETTINGS"].session_idle_timeout_s
    shift_session_times(app, user_id, seen_by=timedelta(seconds=idle + 5))
    assert client.get("/studies/").status_code == 302
    assert end_state(app, user_id) == [(True, "idle_timeout")]


def test_activity_within_idle_timeout_keeps_session(app, client, make_clinic, make_user, login):
    user_id = make_user(make_clinic())
    login(user_id)
    idle = app.config["PORTAL_SETTINGS"].session_idle_timeout_s
    shift_session_times(app, user_id, seen_by=timedelta(seconds=idle - 60))
    assert client.get("/studies/").status_code == 200
    # The request moved last_seen_at forward, so the same gap again is still within the limit.
    shift_session_times(app, user_id, seen_by=timedelta(seconds=idle - 60))
    assert client.get("/studies/").status_code == 200
    assert end_state(app, user_id) == [(False, None)]


def test_absolute_lifetime_ends_active_session(make_app, make_clinic, make_user, login):
    app = make_app(session_idle_timeout_s=600, session_max_lifetime_s=3600)
    browser = app.test_client()
    from portal.clinics.models import Identity, Membership, Role, User
    from portal.clinics.services import create_clinic
    from portal.extensions import db

    with app.app_context():
        clinic = create_clinic("Clínica C", seat_limit=2)
        user = User(email="c@example.com")
        db.session.add(Identity(issuer="http://idp.test", subject="c", user=user))
        db.session.add(Membership(user=user, clinic=clinic, role=Role.DOCTOR))
        db.session.commit()
        user_id = user.id
    login(user_id, test_client=browser)
    shift_session_times(app, user_id, created_by=timedelta(seconds=3601))
    assert browser.get("/studies/").status_code == 302
    assert end_state(app, user_id) == [(True, "max_lifetime")]


def test_removed_member_loses_pages_at_next_request(app, client, make_clinic, make_user, login):
    from sqlalchemy import select

    from portal.clinics.models import Membership, MembershipStatus
    from portal.extensions import db

    user_id = make_user(make_clinic())
    login(user_id)
    assert client.get("/studies/").status_code == 200
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.user_id == user_id))
        membership.status = MembershipStatus.REMOVED
        db.session.commit()
    response = client.get("/studies/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/no-clinic")


def test_end_user_sessions_ends_every_session(app, make_clinic, make_user, login):
    from portal.auth.sessions import end_user_sessions
    from portal.extensions import db

    user_id = make_user(make_clinic())
    first = login(user_id, test_client=app.test_client())
    second = login(user_id, test_client=app.test_client())
    with app.app_context():
        assert end_user_sessions(user_id, reason="membership_removed") == 2
        db.session.commit()
    assert first.get("/studies/").status_code == 302
    assert second.get("/studies/").status_code == 302


def test_locale_survives_ended_session(client, make_clinic, make_user):
    user_id = make_user(make_clinic())
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["sid"] = "ended"
        session["locale"] = "en"
    client.get("/studies/")
    with client.session_transaction() as session:
        assert "_user_id" not in session
        assert session["locale"] == "en"


def test_unreachable_provider_sign_in_page(make_app):
    from tests.support.servers import free_port

    app = make_app(oidc_issuer=f"http://127.0.0.1:{free_port()}", cognito_client_id="web")
    response = app.test_client().get("/auth/login", headers={"Accept-Language": "en"})
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "The identity provider could not be reached." in page
    assert 'href="/auth/login"' in page


# Security headers


def test_headers_on_page_redirect_error_and_api(client, make_clinic, make_user, login, app):
    responses = {
        "redirect": client.get("/studies/"),
        "missing page": client.get("/no-such-page"),
        "api": client.get("/api/health/"),
        "static": client.get("/static/css/portal.css"),
    }
    login(make_user(make_clinic()))
    responses["page"] = client.get("/studies/")
    assert responses["redirect"].status_code == 302
    assert responses["missing page"].status_code == 404
    for name, response in responses.items():
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy, name
        assert "script-src 'self';" in policy, name
        assert "unsafe-inline" not in policy, name
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["Referrer-Policy"] == "same-origin", name
        assert "Strict-Transport-Security" not in response.headers, name
        response.close()


def test_csp_allows_only_the_s3_endpoint_and_provider(app, s3_server):
    from portal.security_headers import content_security_policy

    settings = app.config["PORTAL_SETTINGS"]
    directives = dict(
        part.strip().split(" ", 1) for part in content_security_policy(settings).split(";")
    )
    assert directives["connect-src"] == f"'self' {s3_server.endpoint_url}"
    assert directives["default-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"


def test_csp_on_aws_names_the_bucket_origin():
    from portal.config import Settings
    from portal.security_headers import content_security_policy

    settings = Settings.from_env({"S3_BUCKET": "vizier-prod", "AWS_REGION": "sa-east-1"})
    assert "connect-src 'self' https://vizier-prod.s3.sa-east-1.amazonaws.com;" in (
        content_security_policy(settings)
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_hsts_in_production(make_app):
    # Production refuses SQLite and missing secrets at start, so this app gets them all.
    app = make_app(
        portal_env="production",
        secret_key=secrets.token_hex(32),
        portal_base_url="https://portal.example.com.br",
        oidc_issuer="https://idp.example.com.br",
        redis_url="redis://127.0.0.1:6379/0",
        cognito_client_id="portal",
        cognito_client_secret=secrets.token_hex(16),
        cognito_domain="https://auth.example.com.br",
        inference_api_token=secrets.token_hex(16),
        patient_data_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        s3_sse="AES256",
    )
    response = app.test_client().get("/auth/signed-out")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_forms_without_csrf_token_rejected(make_app, make_clinic, make_user):
    app = make_app()
    app.config["WTF_CSRF_ENABLED"] = True
    response = app.test_client().post("/auth/locale", data={"locale": "en"})
    assert response.status_code == 400


# Rate limits


@pytest.fixture
def limited_app(make_app):
    from tests.support.servers import free_port

    # The provider is never contacted: the callbacks below carry an error from it.
    return make_app(
        rate_limit_api="3 per minute",
        rate_limit_sign_in="2 per minute",
        rate_limit_api_unauthenticated="2 per minute",
        oidc_issuer=f"http://127.0.0.1:{free_port()}",
        cognito_client_id="web",
    )


def test_api_rate_limit_is_per_key(limited_app, queued):
    from portal.clinics.models import Clinic
    from portal.clinics.services import create_api_key, create_clinic
    from portal.extensions import db

    with limited_app.app_context():
        clinic = create_clinic("Clínica R", seat_limit=2)
        _key, first_key = create_api_key(clinic, name="A")
        _key, second_key = create_api_key(db.session.get(Clinic, clinic.id), name="B")
        db.session.commit()
    client = limited_app.test_client()
    path = "/api/studies/00000000-0000-0000-0000-000000000000/"
    statuses = [
        client.get(path, headers={"Authorization": f"Bearer {first_key}"}).status_code
        for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]
    over = client.get(path, headers={"Authorization": f"Bearer {first_key}"})
    assert over.mimetype == "application/problem+json"
    assert over.get_json()["code"] == "too_many_requests"
    assert 0 < int(over.headers["Retry-After"]) <= 60
    # Another key of the same clinic has its own budget.
    other = client.get(path, headers={"Authorization": f"Bearer {second_key}"})
    assert other.status_code == 404


def test_rejected_credentials_limited_per_address(limited_app, queued):
    from portal.clinics.services import create_api_key, create_clinic
    from portal.extensions import db
    from tests.web.audit_helpers import EventWatch

    with limited_app.app_context():
        clinic = create_clinic("Clínica R", seat_limit=2)
        _key, valid_key = create_api_key(clinic, name="A")
        db.session.commit()
    client = limited_app.test_client()
    path = "/api/studies/00000000-0000-0000-0000-000000000000/"
    wrong = {"Authorization": "Bearer vzm_wrong_key", "Accept-Language": "en"}
    platform = EventWatch(limited_app, None)

    statuses = [client.get(path, headers=wrong).status_code for _ in range(2)]
    over = client.get(path, headers=wrong)

    assert statuses == [401, 401]
    assert over.status_code == 429
    assert over.mimetype == "application/problem+json"
    assert over.get_json()["code"] == "too_many_rejected_credentials"
    assert "valid API key" in over.get_json()["detail"]
    # Only the refusals under the limit reach the audit trail.
    assert [event.action for event in platform.new_events()] == ["access.denied"] * 2
    # A valid key from the same address is still served.
    valid = client.get(path, headers={"Authorization": f"Bearer {valid_key}"})
    assert valid.status_code == 404


def test_sign_in_rate_limit(limited_app):
    client = limited_app.test_client()
    statuses = [client.get("/auth/callback?error=access_denied").status_code for _ in range(3)]
    assert statuses == [400, 400, 429]


def test_default_api_limit_allows_polling():
    """An integration polling a dozen studies every second stays under the default limit."""
    from limits import parse_many

    from portal.config import Settings

    limits = parse_many(Settings.from_env({}).rate_limit_api)
    for limit in limits:
        per_second = limit.amount / limit.get_expiry()
        assert per_second >= 12, str(limit)


def test_rate_limits_use_redis_when_configured(make_app):
    from portal.extensions import limiter

    make_app(redis_url="redis://127.0.0.1:6379/15")
    assert type(limiter.storage).__name__ == "RedisStorage"
    assert limiter.storage.check()
    make_app()
    assert type(limiter.storage).__name__ == "MemoryStorage"


# API-key page


@pytest.fixture
def admin_client(app, client, make_clinic, make_user, login):
    clinic_id = make_clinic()
    login(make_user(clinic_id, role="admin", email="admin@example.com"))
    return client, clinic_id


def test_admin_creates_key_shown_once(admin_client, app):
    client, clinic_id = admin_client
    response = client.post("/clinic/api-keys/", data={"name": "RIS", "expires_on": ""})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    token = page.split('id="new-api-key" class="secret">')[1].split("<")[0]
    assert token.startswith("vzm_")

    listing = client.get("/clinic/api-keys/").get_data(as_text=True)
    assert "RIS" in listing
    assert token.split("_")[1] in listing
    assert token not in listing

    api = client.get(
        "/api/studies/00000000-0000-0000-0000-000000000000/",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert api.status_code == 404


def test_key_lists_last_use(admin_client, app):
    client, clinic_id = admin_client
    page = client.post("/clinic/api-keys/", data={"name": "PACS"}).get_data(as_text=True)
    token = page.split('id="new-api-key" class="secret">')[1].split("<")[0]
    assert "Nunca" in client.get("/clinic/api-keys/").get_data(as_text=True)
    client.get("/api/studies/x/", headers={"Authorization": f"Bearer {token}"})
    assert "Nunca" not in client.get("/clinic/api-keys/").get_data(as_text=True)


def test_admin_revokes_key(admin_client, app, make_api_key):
    client, clinic_id = admin_client
    token = make_api_key(clinic_id, name="Old RIS")
    key_id = token.split("_")[1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/studies/x/", headers=headers).status_code == 404

    response = client.post(f"/clinic/api-keys/{key_id}/revoke")
    assert response.status_code == 302
    assert client.get("/api/studies/x/", headers=headers).status_code == 401
    assert "Revogada" in client.get("/clinic/api-keys/").get_data(as_text=True)


def test_expired_key_rejected(app, client, make_clinic, queued):
    from datetime import UTC, datetime

    from portal.clinics.models import ApiKey, Clinic
    from portal.clinics.services import create_api_key
    from portal.extensions import db

    clinic_id = make_clinic()
    with app.app_context():
        api_key, token = create_api_key(
            db.session.get(Clinic, clinic_id),
            name="Short",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        db.session.commit()
        key_row_id = api_key.id
    zip_file = (io.BytesIO(zip_bytes({"IM0001": b"x"})), "study.zip")
    headers = {"Authorization": f"Bearer {token}"}
    assert post_multipart(client, "/api/studies/", {"file": zip_file}, headers).status_code == 202
    with app.app_context():
        db.session.get(ApiKey, key_row_id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db.session.commit()
    assert client.get("/api/studies/x/", headers=headers).status_code == 401


def test_expiry_date_in_past_rejected(admin_client):
    client, _clinic_id = admin_client
    response = client.post("/clinic/api-keys/", data={"name": "RIS", "expires_on": "2020-01-01"})
    assert response.status_code == 400
    assert "vzm_" not in response.get_data(as_text=True)


def test_doctor_cannot_manage_keys(client, make_clinic, make_user, login, make_api_key):
    clinic_id = make_clinic()
    login(make_user(clinic_id, role="doctor"))
    key_id = make_api_key(clinic_id).split("_")[1]
    assert client.get("/clinic/api-keys/").status_code == 403
    assert client.post("/clinic/api-keys/", data={"name": "x"}).status_code == 403
    assert client.post(f"/clinic/api-keys/{key_id}/revoke").status_code == 403


def test_other_clinic_key_is_404(admin_client, make_clinic, make_api_key):
    client, _clinic_id = admin_client
    other_key_id = make_api_key(make_clinic("Clínica B")).split("_")[1]
    assert client.post(f"/clinic/api-keys/{other_key_id}/revoke").status_code == 404
