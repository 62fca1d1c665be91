"""Access tokens on the JSON API, against a Cognito-shaped user pool served on 127.0.0.1.

Each bad token of the matrix is its own test case and must get 401 with problem+json.
A valid token of a user without an active membership gets 403.
"""

from __future__ import annotations

import io
import time
import uuid

import pytest

from tests.support.cognito import (
    CLIENT_ID,
    SigningKey,
    TokenMinter,
    serve_counting_urls,
    serve_user_pool,
)
from tests.web.conftest import post_multipart, zip_bytes

DOCTOR_SUB = "5c1e2f4a-0d6b-4f6e-9a41-7d2b3c4e5f60"
OTHER_POOL = "https://cognito-idp.sa-east-1.amazonaws.com/sa-east-1_OtherPool"


@pytest.fixture
def pool_key():
    return SigningKey(kid="pool-key-1")


@pytest.fixture
def user_pool(pool_key):
    with serve_user_pool([pool_key]) as pool:
        yield pool


@pytest.fixture
def app(make_app, user_pool):
    """The web app with the stand-in pool as its identity provider."""
    return make_app(oidc_issuer=user_pool.issuer, cognito_client_id=CLIENT_ID, token_leeway_s=30)


@pytest.fixture
def minter(user_pool, pool_key):
    return TokenMinter(issuer=user_pool.issuer, key=pool_key)


@pytest.fixture
def doctor(app, make_clinic, user_pool):
    """Return (clinic id, user id) of a doctor whose identity is the pool's DOCTOR_SUB."""
    from portal.clinics.models import Identity, Membership, Role, User
    from portal.extensions import db

    clinic_id = make_clinic()
    with app.app_context():
        user = User(email="medica@example.com", display_name="Dra. Medica")
        db.session.add(Identity(issuer=user_pool.issuer, subject=DOCTOR_SUB, user=user))
        db.session.add(Membership(user=user, clinic_id=clinic_id, role=Role.DOCTOR))
        db.session.commit()
        return clinic_id, user.id


@pytest.fixture
def study_path(client, doctor, make_api_key, queued):
    """Return the status path of a study of the doctor's clinic, uploaded with an API key."""
    clinic_id, _user_id = doctor
    key = make_api_key(clinic_id)
    zip_file = (io.BytesIO(zip_bytes({"IM0001": b"x"})), "study.zip")
    response = post_multipart(
        client, "/api/studies/", {"file": zip_file}, {"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 202
    return f"/api/studies/{response.get_json()['id']}/status/"


def call(client, path, token):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def assert_unauthorized(response):
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_valid_access_token_reaches_study(client, study_path, minter):
    response = call(client, study_path, minter.sign(minter.access_claims(DOCTOR_SUB)))
    assert response.status_code == 200
    assert response.get_json()["status"] == "uploaded"


def test_upload_with_access_token_records_uploader(client, doctor, minter, queued, app):
    from portal.extensions import db
    from portal.studies.models import Study

    token = minter.sign(minter.access_claims(DOCTOR_SUB))
    zip_file = (io.BytesIO(zip_bytes({"IM0001": b"x"})), "study.zip")
    response = post_multipart(
        client, "/api/studies/", {"file": zip_file}, {"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 202
    with app.app_context():
        study = db.session.get(Study, uuid.UUID(response.get_json()["id"]))
        assert study.clinic_id == doctor[0]
        assert study.uploaded_by_user_id == doctor[1]
        assert study.uploaded_by_api_key_id is None


# Each entry builds one bad token from the minter, and every one must get 401.
BAD_TOKENS = {
    "id_token": lambda m: m.sign(m.id_claims(DOCTOR_SUB)),
    "other_pool_issuer": lambda m: m.sign(m.access_claims(DOCTOR_SUB, iss=OTHER_POOL)),
    "other_pool_key": lambda m: m.sign(
        m.access_claims(DOCTOR_SUB), key=SigningKey(kid="other-pool-key")
    ),
    "other_app_client": lambda m: m.sign(m.access_claims(DOCTOR_SUB, client_id="other-client")),
    "client_id_missing": lambda m: m.sign(m.access_claims(DOCTOR_SUB, client_id=None)),
    "token_use_missing": lambda m: m.sign(m.access_claims(DOCTOR_SUB, token_use=None)),
    "alg_none": lambda m: m.unsigned(m.access_claims(DOCTOR_SUB)),
    "hs256_with_public_key": lambda m: m.hs256_with_public_key(m.access_claims(DOCTOR_SUB)),
    "rs256_declared_as_rs512": lambda m: m.sign(m.access_claims(DOCTOR_SUB), alg="RS512"),
    "embedded_jwk": lambda m: m.sign(
        m.access_claims(DOCTOR_SUB),
        key=(attacker := SigningKey(kid="pool-key-1")),
        jwk=attacker.public_jwk(),
    ),
    "x5c_chain": lambda m: m.sign(m.access_claims(DOCTOR_SUB), x5c=["MIIB"]),
    "crit_header": lambda m: m.sign(m.access_claims(DOCTOR_SUB), crit=["exp"]),
    "kid_missing": lambda m: m.sign(m.access_claims(DOCTOR_SUB), kid=None),
    "tampered_payload": lambda m: _swap_payload(
        m.sign(m.access_claims(DOCTOR_SUB)), m.access_claims("someone-else")
    ),
    "tampered_signature": lambda m: _flip_signature(m.sign(m.access_claims(DOCTOR_SUB))),
    "expired": lambda m: m.sign(
        m.access_claims(DOCTOR_SUB, exp=int(time.time()) - 120, iat=int(time.time()) - 3720)
    ),
    "not_yet_valid": lambda m: m.sign(m.access_claims(DOCTOR_SUB, nbf=int(time.time()) + 300)),
    "issued_in_future": lambda m: m.sign(m.access_claims(DOCTOR_SUB, iat=int(time.time()) + 300)),
    "exp_missing": lambda m: m.sign(m.access_claims(DOCTOR_SUB, exp=None)),
    "exp_not_a_number": lambda m: m.sign(m.access_claims(DOCTOR_SUB, exp="tomorrow")),
    "sub_missing": lambda m: m.sign(m.access_claims(DOCTOR_SUB, sub=None)),
    "two_segments": lambda m: ".".join(m.sign(m.access_claims(DOCTOR_SUB)).split(".")[:2]),
    "not_base64": lambda m: "a$b.c$d.e$f",
    "header_not_json_object": lambda m: "WzFd.e30.c2ln",
}


def _swap_payload(token: str, claims: dict) -> str:
    from tests.support.cognito import b64url_json

    header, _payload, signature = token.split(".")
    return f"{header}.{b64url_json(claims)}.{signature}"


def _flip_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


#: The reason the validator logs for each bad token, so a case cannot pass by accident.
EXPECTED_REASONS = {
    "id_token": "wrong_token_use",
    "other_pool_issuer": "wrong_issuer",
    "other_pool_key": "unknown_kid",
    "other_app_client": "wrong_client",
    "client_id_missing": "wrong_client",
    "token_use_missing": "wrong_token_use",
    "alg_none": "algorithm_not_allowed",
    "hs256_with_public_key": "algorithm_not_allowed",
    "rs256_declared_as_rs512": "algorithm_not_allowed",
    "embedded_jwk": "forbidden_header",
    "x5c_chain": "forbidden_header",
    "crit_header": "forbidden_header",
    "kid_missing": "missing_kid",
    "tampered_payload": "bad_signature",
    "tampered_signature": "bad_signature",
    "expired": "expired",
    "not_yet_valid": "not_yet_valid",
    "issued_in_future": "issued_in_future",
    "exp_missing": "invalid_exp",
    "exp_not_a_number": "invalid_exp",
    "sub_missing": "missing_subject",
    "two_segments": "malformed",
    "not_base64": "malformed",
    "header_not_json_object": "malformed",
}


def test_every_bad_token_has_expected_reason():
    assert sorted(EXPECTED_REASONS) == sorted(BAD_TOKENS)


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_401(client, study_path, minter, case, caplog):
    token = BAD_TOKENS[case](minter)
    with caplog.at_level("INFO", logger="portal.auth.services"):
        assert_unauthorized(call(client, study_path, token))
    assert f"access token rejected: {EXPECTED_REASONS[case]}" in caplog.messages


@pytest.mark.parametrize("parameter", ["jku", "x5u"])
def test_key_url_header_is_401_and_never_fetched(client, study_path, minter, parameter):
    with serve_counting_urls() as (base_url, seen):
        token = minter.sign(minter.access_claims(DOCTOR_SUB), **{parameter: f"{base_url}/keys"})
        assert_unauthorized(call(client, study_path, token))
    assert sum(seen.values()) == 0


def test_expiry_within_leeway_accepted(client, study_path, minter):
    now = int(time.time())
    token = minter.sign(minter.access_claims(DOCTOR_SUB, exp=now - 10, iat=now - 3610))
    assert call(client, study_path, token).status_code == 200


def test_missing_bearer_is_401(client, study_path):
    assert_unauthorized(client.get(study_path))
    assert_unauthorized(client.get(study_path, headers={"Authorization": "Basic abc"}))


def test_session_cookie_not_accepted_by_api(client, study_path, doctor, login):
    login(doctor[1])
    assert_unauthorized(client.get(study_path))


def test_user_without_membership_is_403(client, study_path, minter, app, user_pool):
    from portal.clinics.models import Identity, User
    from portal.extensions import db

    with app.app_context():
        user = User(email="no-clinic@example.com")
        db.session.add(Identity(issuer=user_pool.issuer, subject="lonely-sub", user=user))
        db.session.commit()
    for subject in ("lonely-sub", "never-signed-in-sub"):
        response = call(client, study_path, minter.sign(minter.access_claims(subject)))
        assert response.status_code == 403
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "no_active_membership"


def test_removed_member_token_is_403_at_next_request(client, study_path, minter, doctor, app):
    from sqlalchemy import select

    from portal.clinics.models import Membership, MembershipStatus
    from portal.extensions import db

    token = minter.sign(minter.access_claims(DOCTOR_SUB))
    assert call(client, study_path, token).status_code == 200
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.user_id == doctor[1]))
        membership.status = MembershipStatus.REMOVED
        db.session.commit()
    response = call(client, study_path, token)
    assert response.status_code == 403
    assert response.get_json()["code"] == "no_active_membership"


def test_other_clinic_study_is_404_for_token(client, minter, doctor, make_clinic, make_api_key):
    other_key = make_api_key(make_clinic("Clínica B"))
    zip_file = (io.BytesIO(zip_bytes({"IM0001": b"x"})), "study.zip")
    response = post_multipart(
        client, "/api/studies/", {"file": zip_file}, {"Authorization": f"Bearer {other_key}"}
    )
    other_path = f"/api/studies/{response.get_json()['id']}/"
    token = minter.sign(minter.access_claims(DOCTOR_SUB))
    assert call(client, other_path, token).status_code == 404


def test_unknown_kid_refetch_throttled(client, study_path, minter, user_pool, pool_key):
    assert (
        call(client, study_path, minter.sign(minter.access_claims(DOCTOR_SUB))).status_code == 200
    )
    assert user_pool.requests[f"/{user_pool.issuer.rsplit('/', 1)[1]}/.well-known/jwks.json"] == 1
    stranger = SigningKey(kid="made-up-kid")
    for _attempt in range(5):
        token = minter.sign(minter.access_claims(DOCTOR_SUB), key=stranger)
        assert_unauthorized(call(client, study_path, token))
    jwks_path = f"/{user_pool.issuer.rsplit('/', 1)[1]}/.well-known/jwks.json"
    assert user_pool.requests[jwks_path] == 1


def test_rotated_key_accepted_after_refetch(app, user_pool, minter, pool_key):
    from portal.auth.tokens import AccessTokenVerifier, JwksCache

    clock = [1000.0]
    verifier = AccessTokenVerifier(
        issuer=user_pool.issuer,
        client_ids=[CLIENT_ID],
        leeway_s=30,
        keys=JwksCache(user_pool.issuer, clock=lambda: clock[0]),
    )
    assert verifier.verify(minter.sign(minter.access_claims(DOCTOR_SUB))).subject == DOCTOR_SUB
    assert verifier.keys.fetch_count == 1

    new_key = SigningKey(kid="pool-key-2")
    user_pool.keys.append(new_key)
    rotated = minter.sign(minter.access_claims(DOCTOR_SUB), key=new_key)
    clock[0] += 30
    with pytest.raises(Exception, match="unknown_kid"):
        verifier.verify(rotated)
    assert verifier.keys.fetch_count == 1

    clock[0] += 31
    claims = verifier.verify(rotated)
    assert claims.client_id == CLIENT_ID
    assert claims.scopes == ("openid", "email", "profile")
    assert verifier.keys.fetch_count == 2


def test_removed_key_rejected_after_max_age(app, user_pool, minter, pool_key):
    from portal.auth.tokens import JWKS_MAX_AGE_S, AccessTokenVerifier, JwksCache

    clock = [0.0]
    verifier = AccessTokenVerifier(
        issuer=user_pool.issuer,
        client_ids=[CLIENT_ID],
        leeway_s=30,
        keys=JwksCache(user_pool.issuer, clock=lambda: clock[0]),
    )
    token = minter.sign(minter.access_claims(DOCTOR_SUB))
    verifier.verify(token)
    user_pool.keys.clear()
    user_pool.keys.append(SigningKey(kid="pool-key-2"))
    clock[0] += JWKS_MAX_AGE_S
    with pytest.raises(Exception, match="unknown_kid"):
        verifier.verify(token)


def test_unreachable_provider_is_503(make_app, minter, doctor):
    from tests.support.servers import free_port

    app = make_app(oidc_issuer=f"http://127.0.0.1:{free_port()}/sa-east-1_Gone")
    response = app.test_client().get(
        f"/api/studies/{uuid.uuid4()}/",
        headers={"Authorization": f"Bearer {minter.sign(minter.access_claims(DOCTOR_SUB))}"},
    )
    assert response.status_code == 503
    assert response.get_json()["code"] == "identity_provider_unavailable"
