"""userInfo, logout, refresh and revocation, key persistence and start-up of the dev provider."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests
from authlib.jose import JsonWebKey, jwt

from tests.devidp.conftest import (
    ADMIN,
    CLIENT_ID,
    CLIENT_SECRET,
    DOCTOR,
    LOGOUT_URI,
    REDIRECT_URI,
    build_authorization_request,
    exchange_code,
    query_params,
)
from tests.support.devidp import (
    READY_PREFIX,
    SERVER_SCRIPT,
    find_free_port,
    login_with_password,
    start_devidp,
)


def get_userinfo(devidp, access_token: str, method: str = "GET"):
    return requests.request(
        method,
        devidp.url("/oauth2/userInfo"),
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )


def test_userinfo_returns_profile_claims(devidp, sign_in):
    tokens, _ = sign_in(DOCTOR)

    response = get_userinfo(devidp, tokens["access_token"])

    assert response.status_code == 200, response.text
    assert response.json() == {
        "sub": DOCTOR["sub"],
        "email": DOCTOR["email"],
        "email_verified": True,
        "name": DOCTOR["name"],
        "cognito:username": DOCTOR["username"],
        "cognito:groups": DOCTOR["groups"],
        "username": DOCTOR["username"],
    }


def test_userinfo_accepts_post(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)

    response = get_userinfo(devidp, tokens["access_token"], method="POST")

    assert response.status_code == 200, response.text
    assert response.json()["sub"] == ADMIN["sub"]


def test_userinfo_omits_claims_of_missing_scopes(devidp):
    request = build_authorization_request(devidp, scope="openid")
    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")
    tokens = exchange_code(devidp, query_params(redirect)["code"], request.code_verifier).json()

    claims = get_userinfo(devidp, tokens["access_token"]).json()

    assert claims["sub"] == ADMIN["sub"]
    assert claims["cognito:username"] == ADMIN["username"]
    assert "email" not in claims
    assert "name" not in claims


def test_userinfo_rejects_missing_token(devidp):
    response = requests.get(devidp.url("/oauth2/userInfo"), timeout=10)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_userinfo_rejects_id_token(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)

    response = get_userinfo(devidp, tokens["id_token"])

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_userinfo_rejects_tampered_token(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)
    header, payload, signature = tokens["access_token"].split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")

    response = get_userinfo(devidp, f"{header}.{payload}.{flipped}")

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_userinfo_rejects_token_of_other_signer(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)
    other_key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    now = int(time.time())
    forged = jwt.encode(
        {"alg": "RS256", "kid": "forged"},
        {
            "sub": ADMIN["sub"],
            "iss": devidp.issuer,
            "client_id": CLIENT_ID,
            "token_use": "access",
            "scope": "openid email profile",
            "iat": now,
            "exp": now + 600,
        },
        other_key,
    ).decode("ascii")

    response = get_userinfo(devidp, forged)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_refresh_token_grant_issues_new_tokens(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)
    assert tokens["refresh_token"]

    response = requests.post(
        devidp.url("/oauth2/token"),
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )

    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert refreshed["access_token"] != tokens["access_token"]
    assert get_userinfo(devidp, refreshed["access_token"]).json()["sub"] == ADMIN["sub"]


def test_revoked_refresh_token_stops_working(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)

    revoke = requests.post(
        devidp.url("/oauth2/revoke"),
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    refresh = requests.post(
        devidp.url("/oauth2/token"),
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )

    assert revoke.status_code == 200
    assert refresh.status_code == 400
    assert refresh.json()["error"] == "invalid_grant"


def test_logout_ends_session_and_redirects(devidp):
    session = requests.Session()
    login_with_password(session, build_authorization_request(devidp).url, "admin", "demo-admin")

    logout = session.get(
        devidp.url("/logout"),
        params={"client_id": CLIENT_ID, "logout_uri": LOGOUT_URI},
        allow_redirects=False,
        timeout=10,
    )
    after = session.get(build_authorization_request(devidp).url, allow_redirects=False, timeout=10)

    assert logout.status_code == 302
    assert logout.headers["Location"] == LOGOUT_URI
    # Without a session the next authorize request shows the sign-in page again.
    assert after.is_redirect
    assert "/interaction/" in after.headers["Location"]
    assert not after.headers["Location"].startswith(REDIRECT_URI)


def test_logout_rejects_unknown_logout_uri(devidp):
    session = requests.Session()
    login_with_password(session, build_authorization_request(devidp).url, "admin", "demo-admin")

    logout = session.get(
        devidp.url("/logout"),
        params={"client_id": CLIENT_ID, "logout_uri": "http://127.0.0.1:8000/not-registered"},
        allow_redirects=False,
        timeout=10,
    )
    after = session.get(build_authorization_request(devidp).url, allow_redirects=False, timeout=10)

    assert logout.status_code == 400
    assert "Location" not in logout.headers
    assert "logout_uri" in logout.text
    # The session survives a rejected logout.
    assert after.headers["Location"].startswith(REDIRECT_URI + "?")


def test_logout_rejects_unknown_client(devidp):
    response = requests.get(
        devidp.url("/logout"),
        params={"client_id": "someone-else", "logout_uri": LOGOUT_URI},
        allow_redirects=False,
        timeout=10,
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "client_id" in response.text


def test_signing_key_survives_restart(tmp_path):
    keys_file = tmp_path / "keys.json"
    settings = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [REDIRECT_URI],
        "logout_uris": [LOGOUT_URI],
        "keys_file": keys_file,
    }

    with start_devidp(tmp_path, **settings) as first:
        first_keys = requests.get(first.url("/.well-known/jwks.json"), timeout=10).json()
        request = build_authorization_request(first)
        redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")
        tokens = exchange_code(first, query_params(redirect)["code"], request.code_verifier).json()
        assert first.stop() == 0
    assert keys_file.stat().st_mode & 0o077 == 0

    with start_devidp(tmp_path, **settings) as second:
        second_keys = requests.get(second.url("/.well-known/jwks.json"), timeout=10).json()

    assert [key["kid"] for key in second_keys["keys"]] == [key["kid"] for key in first_keys["keys"]]
    claims = jwt.decode(tokens["id_token"], JsonWebKey.import_key_set(second_keys))
    assert claims["sub"] == ADMIN["sub"]


def test_server_exits_cleanly_on_sigint(tmp_path):
    with start_devidp(
        tmp_path,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        logout_uris=[LOGOUT_URI],
    ) as devidp:
        devidp.process.send_signal(signal.SIGINT)
        assert devidp.process.wait(timeout=10) == 0


def test_start_fails_without_client_id(tmp_path):
    port = find_free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEVIDP_")} | {
        "DEVIDP_PORT": str(port),
        "DEVIDP_CLIENT_SECRET": CLIENT_SECRET,
        "DEVIDP_REDIRECT_URIS": REDIRECT_URI,
        "DEVIDP_LOGOUT_URIS": LOGOUT_URI,
        "DEVIDP_KEYS_FILE": str(tmp_path / "keys.json"),
    }

    result = subprocess.run(
        ["node", str(SERVER_SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 1
    assert "DEVIDP_CLIENT_ID is missing" in result.stderr
    assert READY_PREFIX not in result.stdout


def test_start_fails_on_invalid_accounts_file(tmp_path):
    accounts_file = tmp_path / "accounts.json"
    accounts_file.write_text('{"accounts": [{"sub": "x", "username": "u"}]}', encoding="utf-8")
    port = find_free_port()
    env = dict(os.environ) | {
        "DEVIDP_PORT": str(port),
        "DEVIDP_CLIENT_ID": CLIENT_ID,
        "DEVIDP_CLIENT_SECRET": CLIENT_SECRET,
        "DEVIDP_REDIRECT_URIS": REDIRECT_URI,
        "DEVIDP_LOGOUT_URIS": LOGOUT_URI,
        "DEVIDP_KEYS_FILE": str(tmp_path / "keys.json"),
        "DEVIDP_ACCOUNTS_FILE": str(accounts_file),
    }

    result = subprocess.run(
        ["node", str(SERVER_SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 1
    assert "account #0 is missing the string field" in result.stderr
    assert "email" in result.stderr
