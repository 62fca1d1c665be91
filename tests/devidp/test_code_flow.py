"""Authorization code flow against the dev identity provider, checked the way the portal will."""

from __future__ import annotations

import time

import pytest
import requests
from authlib.jose import JsonWebKey, jwt
from authlib.jose.errors import BadSignatureError

from tests.devidp.conftest import (
    ACCESS_TOKEN_TTL,
    ADMIN,
    CLIENT_ID,
    CLIENT_SECRET,
    DOCTOR,
    REDIRECT_URI,
    build_authorization_request,
    exchange_code,
    query_params,
)
from tests.support.devidp import LoginFailedError, login_with_password


def load_key_set(devidp):
    response = requests.get(devidp.url("/.well-known/jwks.json"), timeout=10)
    assert response.status_code == 200
    return JsonWebKey.import_key_set(response.json())


def decode_verified(devidp, token: str):
    """Verify an RS256 token against the provider's jwks_uri and return its claims."""
    claims = jwt.decode(token, load_key_set(devidp))
    assert claims.header["alg"] == "RS256"
    return claims


def test_discovery_lists_cognito_endpoints(devidp):
    response = requests.get(devidp.url("/.well-known/openid-configuration"), timeout=10)

    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == devidp.issuer
    assert document["authorization_endpoint"] == devidp.issuer + "/oauth2/authorize"
    assert document["token_endpoint"] == devidp.issuer + "/oauth2/token"
    assert document["userinfo_endpoint"] == devidp.issuer + "/oauth2/userInfo"
    assert document["jwks_uri"] == devidp.issuer + "/.well-known/jwks.json"
    assert document["revocation_endpoint"] == devidp.issuer + "/oauth2/revoke"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


def test_jwks_serves_only_public_rsa_keys(devidp):
    keys = requests.get(devidp.url("/.well-known/jwks.json"), timeout=10).json()["keys"]

    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["alg"] == "RS256"
    assert keys[0]["use"] == "sig"
    assert keys[0]["kid"]
    for private_member in ("d", "p", "q", "dp", "dq", "qi"):
        assert private_member not in keys[0]


def test_redirect_carries_code_and_state(devidp):
    request = build_authorization_request(devidp)

    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")

    assert redirect.startswith(REDIRECT_URI + "?")
    params = query_params(redirect)
    assert params["code"]
    assert params["state"] == request.state
    assert "error" not in params


def test_id_token_has_cognito_claims(devidp, sign_in):
    before = int(time.time())
    tokens, request = sign_in(ADMIN)

    assert tokens["token_type"].lower() == "bearer"
    claims = decode_verified(devidp, tokens["id_token"])
    claims.validate(now=int(time.time()))
    assert claims["iss"] == devidp.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == ADMIN["sub"]
    assert claims["email"] == ADMIN["email"]
    assert claims["email_verified"] is True
    assert claims["name"] == ADMIN["name"]
    assert claims["cognito:username"] == ADMIN["username"]
    assert claims["cognito:groups"] == ADMIN["groups"]
    assert claims["token_use"] == "id"
    assert claims["nonce"] == request.nonce
    assert before - 5 <= claims["auth_time"] <= claims["iat"] + 1


def test_access_token_is_cognito_shaped_jwt(devidp, sign_in):
    tokens, _ = sign_in(DOCTOR)

    assert tokens["expires_in"] == ACCESS_TOKEN_TTL
    claims = decode_verified(devidp, tokens["access_token"])
    claims.validate(now=int(time.time()))
    assert "aud" not in claims
    assert claims["token_use"] == "access"
    assert claims["client_id"] == CLIENT_ID
    assert claims["iss"] == devidp.issuer
    assert claims["sub"] == DOCTOR["sub"]
    assert claims["username"] == DOCTOR["username"]
    assert claims["cognito:groups"] == DOCTOR["groups"]
    assert set(claims["scope"].split(" ")) == {"openid", "email", "profile"}
    assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_TTL
    assert claims["jti"]
    assert isinstance(claims["auth_time"], int)


def test_access_token_scope_follows_request(devidp):
    request = build_authorization_request(devidp, scope="openid email")
    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")

    response = exchange_code(devidp, query_params(redirect)["code"], request.code_verifier)

    assert response.status_code == 200, response.text
    claims = decode_verified(devidp, response.json()["access_token"])
    assert set(claims["scope"].split(" ")) == {"openid", "email"}
    id_claims = decode_verified(devidp, response.json()["id_token"])
    assert "name" not in id_claims
    assert id_claims["email"] == ADMIN["email"]


def test_token_exchange_accepts_client_secret_post(devidp):
    request = build_authorization_request(devidp)
    redirect = login_with_password(requests.Session(), request.url, "medica", "demo-doctor")

    response = exchange_code(
        devidp, query_params(redirect)["code"], request.code_verifier, use_post=True
    )

    assert response.status_code == 200, response.text
    assert decode_verified(devidp, response.json()["id_token"])["sub"] == DOCTOR["sub"]


def test_token_exchange_rejects_wrong_client_secret(devidp):
    request = build_authorization_request(devidp)
    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")

    response = requests.post(
        devidp.url("/oauth2/token"),
        data={
            "grant_type": "authorization_code",
            "code": query_params(redirect)["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": request.code_verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET + "-wrong"),
        timeout=10,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_token_exchange_rejects_wrong_code_verifier(devidp):
    request = build_authorization_request(devidp)
    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")
    other_request = build_authorization_request(devidp)

    response = exchange_code(devidp, query_params(redirect)["code"], other_request.code_verifier)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_works_only_once(devidp):
    request = build_authorization_request(devidp)
    redirect = login_with_password(requests.Session(), request.url, "admin", "demo-admin")
    code = query_params(redirect)["code"]

    first = exchange_code(devidp, code, request.code_verifier)
    second = exchange_code(devidp, code, request.code_verifier)

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
    ],
    ids=["without-pkce", "plain-method"],
)
def test_authorize_rejects_missing_or_plain_pkce(devidp, overrides):
    request = build_authorization_request(devidp, **overrides)

    response = requests.get(request.url, allow_redirects=False, timeout=10)

    assert response.is_redirect
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_params(location)
    assert params["error"] == "invalid_request"
    assert params["state"] == request.state
    assert "code" not in params


def test_authorize_rejects_unregistered_redirect_uri(devidp):
    request = build_authorization_request(devidp, redirect_uri="http://127.0.0.1:8000/elsewhere")

    response = requests.get(request.url, allow_redirects=False, timeout=10)

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "redirect_uri" in response.text


def test_wrong_password_shows_error(devidp):
    request = build_authorization_request(devidp)

    with pytest.raises(LoginFailedError) as failure:
        login_with_password(requests.Session(), request.url, "admin", "not-the-password")

    assert "Incorrect username or password" in str(failure.value)
    assert "Usuário ou senha incorretos" in failure.value.page
    assert 'value="admin"' in failure.value.page


def test_unknown_user_shows_same_error(devidp):
    request = build_authorization_request(devidp)

    with pytest.raises(LoginFailedError) as failure:
        login_with_password(requests.Session(), request.url, "nobody", "demo-admin")

    assert "Incorrect username or password" in str(failure.value)


def test_login_accepts_email_in_any_case(devidp):
    request = build_authorization_request(devidp)
    redirect = login_with_password(
        requests.Session(), request.url, "MEDICA@Clinica-Demo.com.br", "demo-doctor"
    )

    response = exchange_code(devidp, query_params(redirect)["code"], request.code_verifier)

    assert response.status_code == 200, response.text
    assert decode_verified(devidp, response.json()["id_token"])["sub"] == DOCTOR["sub"]


def test_login_page_lists_demo_accounts(devidp):
    request = build_authorization_request(devidp)

    response = requests.get(request.url, timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    for account in (ADMIN, DOCTOR):
        assert account["username"] in page
        assert account["email"] in page
        assert account["password"] in page
    assert "Senha / Password" in page
    assert "Entrar / Sign in" in page


def test_cancel_returns_access_denied(devidp):
    request = build_authorization_request(devidp)
    session = requests.Session()
    login_page = session.get(request.url, timeout=10)
    assert "/interaction/" in login_page.url

    resume = session.get(login_page.url + "/abort", allow_redirects=False, timeout=10)
    assert resume.is_redirect
    response = session.get(resume.headers["Location"], allow_redirects=False, timeout=10)

    assert response.is_redirect
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert query_params(location)["error"] == "access_denied"
    assert "code" not in query_params(location)


def test_second_authorize_reuses_session(devidp):
    session = requests.Session()
    first = build_authorization_request(devidp)
    login_with_password(session, first.url, "admin", "demo-admin")
    second = build_authorization_request(devidp)

    response = session.get(second.url, allow_redirects=False, timeout=10)

    assert response.is_redirect
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query_params(response.headers["Location"])["code"]


def test_id_token_rejected_with_other_key(devidp, sign_in):
    tokens, _ = sign_in(ADMIN)
    other_key = JsonWebKey.generate_key("RSA", 2048, is_private=True)

    with pytest.raises(BadSignatureError):
        jwt.decode(tokens["id_token"], other_key)
