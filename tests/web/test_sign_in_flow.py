"""Sign-in through the dev identity provider, its error pages, and its access tokens on the API.

The provider runs on 127.0.0.1; the portal runs in Flask's test client, and `requests`
plays the browser on the provider's side.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.devidp.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    DOCTOR,
    REDIRECT_URI,
    build_authorization_request,
    exchange_code,
    query_params,
)
from tests.support.devidp import login_with_password, start_devidp
from tests.web.conftest import post_multipart, zip_bytes

PORTAL_BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def devidp(tmp_path_factory):
    with start_devidp(
        tmp_path_factory.mktemp("devidp"),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        logout_uris=[PORTAL_BASE_URL + "/auth/signed-out"],
    ) as running:
        yield running


@pytest.fixture
def app(make_app, devidp):
    from portal.clinics.services import ensure_demo_data
    from portal.extensions import db

    app = make_app(
        portal_base_url=PORTAL_BASE_URL,
        oidc_issuer=devidp.issuer,
        cognito_client_id=CLIENT_ID,
        cognito_client_secret=CLIENT_SECRET,
        cognito_domain=devidp.issuer,
    )
    with app.app_context():
        ensure_demo_data(devidp.issuer)
        db.session.commit()
    return app


def start_sign_in(client, next_path: str | None = None) -> str:
    """Ask the portal to sign in and return the provider URL it redirects to."""
    url = "/auth/login" + (f"?next={next_path}" if next_path else "")
    response = client.get(url)
    assert response.status_code == 302
    return response.headers["Location"]


def provider_redirect(authorize_url: str, account: dict = DOCTOR) -> str:
    """Sign in at the provider and return the callback URL with `code` and `state`."""
    return login_with_password(
        requests.Session(), authorize_url, account["username"], account["password"]
    )


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_sign_in_returns_to_requested_page(client, devidp, app):
    response = client.get("/studies/new")
    assert response.status_code == 302
    login_url = response.headers["Location"]
    assert login_url.startswith("/auth/login?next=")

    authorize_url = client.get(login_url).headers["Location"]
    params = parse_qs(urlsplit(authorize_url).query)
    assert authorize_url.startswith(devidp.issuer + "/oauth2/authorize")
    assert params["code_challenge_method"] == ["S256"]
    assert params["state"][0] and params["nonce"][0]
    with client.session_transaction() as session:
        assert "sid" not in session

    response = client.get(callback_path(provider_redirect(authorize_url)))
    assert response.status_code == 302
    assert response.headers["Location"] == "/studies/new"
    with client.session_transaction() as session:
        assert session["sid"]
    assert client.get("/studies/new").status_code == 200


@pytest.mark.parametrize(
    "next_path", ["//evil.example/x", "https://evil.example/", "/%5Cevil.example", "/\\evil"]
)
def test_unsafe_next_replaced_by_home(client, app, next_path):
    authorize_url = start_sign_in(client, next_path)
    response = client.get(callback_path(provider_redirect(authorize_url)))
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_session_id_rotated_at_sign_in(app, client):
    with client.session_transaction() as session:
        session["sid"] = "planted-before-sign-in"
        session["planted"] = "value"
    authorize_url = start_sign_in(client)
    client.get(callback_path(provider_redirect(authorize_url)))
    with client.session_transaction() as session:
        assert session["sid"] != "planted-before-sign-in"
        assert "planted" not in session


def test_provider_error_shows_page_with_retry(client, app):
    response = client.get("/auth/callback?error=access_denied&error_description=User+cancelled")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "O login foi cancelado." in page
    assert 'href="/auth/login"' in page
    assert "User cancelled" not in page

    english = client.get(
        "/auth/callback?error=server_error", headers={"Accept-Language": "en"}
    ).get_data(as_text=True)
    assert "The identity provider did not sign you in." in english


def test_wrong_state_shows_error_page(client, app):
    redirect = provider_redirect(start_sign_in(client))
    params = query_params(redirect)
    response = client.get(f"/auth/callback?code={params['code']}&state=not-the-state")
    assert response.status_code == 400
    assert "Não foi possível concluir o login." in response.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "_user_id" not in session


def test_replayed_callback_shows_error_page(client, app):
    callback = callback_path(provider_redirect(start_sign_in(client)))
    assert client.get(callback).status_code == 302
    client.post("/auth/logout")

    # The same callback again: its state was used up.
    replay = client.get(callback)
    assert replay.status_code == 400

    # The old code with a fresh state: the provider rejects the code itself.
    fresh_state = query_params(start_sign_in(client))["state"]
    old_code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get(f"/auth/callback?code={old_code}&state={fresh_state}")
    assert response.status_code == 400
    assert "Não foi possível concluir o login." in response.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "_user_id" not in session


def test_logout_goes_to_provider_logout(client, app, devidp):
    client.get(callback_path(provider_redirect(start_sign_in(client))))
    response = client.post("/auth/logout")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == devidp.url("/logout")
    assert parse_qs(location.query) == {
        "client_id": [CLIENT_ID],
        "logout_uri": [PORTAL_BASE_URL + "/auth/signed-out"],
    }
    assert client.get("/studies/").status_code == 302


def test_dev_provider_access_token_calls_api(client, app, devidp, queued):
    authorization = build_authorization_request(devidp)
    redirect = login_with_password(
        requests.Session(), authorization.url, DOCTOR["username"], DOCTOR["password"]
    )
    code = query_params(redirect)["code"]
    token_response = exchange_code(devidp, code, authorization.code_verifier)
    assert token_response.status_code == 200
    access_token = token_response.json()["access_token"]
    id_token = token_response.json()["id_token"]
    headers = {"Authorization": f"Bearer {access_token}"}

    zip_file = (io.BytesIO(zip_bytes({"IM0001": b"x"})), "study.zip")
    created = post_multipart(client, "/api/studies/", {"file": zip_file}, headers)
    assert created.status_code == 202
    status = client.get(f"/api/studies/{created.get_json()['id']}/status/", headers=headers)
    assert status.status_code == 200
    assert status.get_json()["status"] == "uploaded"
    assert len(queued) == 1

    rejected = client.get(
        f"/api/studies/{created.get_json()['id']}/status/",
        headers={"Authorization": f"Bearer {id_token}"},
    )
    assert rejected.status_code == 401
