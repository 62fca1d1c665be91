"""Fixtures that start one dev identity provider per test module and run the code flow."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.support.devidp import DevIdp, login_with_password, start_devidp

CLIENT_ID = "portal-test-client"
CLIENT_SECRET = "portal-test-secret"
REDIRECT_URI = "http://127.0.0.1:8000/auth/callback"
LOGOUT_URI = "http://127.0.0.1:8000/signed-out"
ACCESS_TOKEN_TTL = 1800

ADMIN = {
    "sub": "8f0c6a2e-1d3b-4c59-9a57-2f4e1b7d0a01",
    "username": "admin",
    "email": "admin@clinica-demo.com.br",
    "name": "Ana Administradora",
    "password": "demo-admin",
    "groups": ["clinic-admins"],
}
DOCTOR = {
    "sub": "8f0c6a2e-1d3b-4c59-9a57-2f4e1b7d0a02",
    "username": "medica",
    "email": "medica@clinica-demo.com.br",
    "name": "Dra. Beatriz Souza",
    "password": "demo-doctor",
    "groups": ["doctors"],
}


@pytest.fixture(scope="module")
def devidp(tmp_path_factory) -> DevIdp:
    """Return a dev identity provider shared by the tests of one module."""
    with start_devidp(
        tmp_path_factory.mktemp("devidp"),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        logout_uris=[LOGOUT_URI],
        access_token_ttl=ACCESS_TOKEN_TTL,
    ) as running:
        yield running


@dataclass
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def make_pkce_pair() -> tuple[str, str]:
    """Return a PKCE code verifier and its S256 code challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def build_authorization_request(
    devidp: DevIdp, *, scope: str = "openid email profile", **overrides: str | None
) -> AuthorizationRequest:
    """Build an authorize URL with PKCE S256, state and nonce.

    Keyword overrides replace query parameters, and an override of None removes one.
    """
    verifier, challenge = make_pkce_pair()
    params: dict[str, str | None] = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": secrets.token_urlsafe(12),
        "nonce": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    query = urlencode({key: value for key, value in params.items() if value is not None})
    return AuthorizationRequest(
        url=devidp.url("/oauth2/authorize") + "?" + query,
        state=params["state"] or "",
        nonce=params["nonce"] or "",
        code_verifier=verifier,
    )


def query_params(url: str) -> dict[str, str]:
    """Return the query parameters of `url`, one value each."""
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def exchange_code(devidp: DevIdp, code: str, code_verifier: str, *, use_post: bool = False):
    """Post the authorization code to the token endpoint with client_secret_basic or _post."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": code_verifier,
    }
    auth = None
    if use_post:
        data.update(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    else:
        auth = (CLIENT_ID, CLIENT_SECRET)
    return requests.post(devidp.url("/oauth2/token"), data=data, auth=auth, timeout=10)


@pytest.fixture
def sign_in(devidp):
    """Return a callable that signs in as an account and returns (token response, request)."""

    def sign_in_as(account: dict, *, session: requests.Session | None = None):
        request = build_authorization_request(devidp)
        redirect = login_with_password(
            session or requests.Session(), request.url, account["username"], account["password"]
        )
        code = query_params(redirect)["code"]
        response = exchange_code(devidp, code, request.code_verifier)
        assert response.status_code == 200, response.text
        return response.json(), request

    return sign_in_as
