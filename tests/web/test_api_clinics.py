"""The JSON API of users, clinics and members, with API keys and with user tokens."""

from __future__ import annotations

import uuid

import pytest

from tests.web.clinic_helpers import outbox_messages


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user_tokens(app):
    """Accept `user:<user id>` as an access token, where the Cognito verifier plugs in."""
    from portal.api.principal import USER_TOKEN_VERIFIER
    from portal.clinics.models import User
    from portal.extensions import db

    def verify(token: str):
        if not token.startswith("user:"):
            return None
        return db.session.get(User, uuid.UUID(token.removeprefix("user:")))

    app.extensions[USER_TOKEN_VERIFIER] = verify
    return lambda user_id: bearer(f"user:{user_id}")


@pytest.fixture
def clinic_a(make_clinic):
    return make_clinic("Clínica A", seats=3)


def test_me_with_api_key(client, clinic_a, make_api_key):
    token = make_api_key(clinic_a, name="RIS Central")
    body = client.get("/api/auth/users/me/", headers=bearer(token)).get_json()
    assert body["type"] == "api_key"
    assert body["api_key"]["name"] == "RIS Central"
    assert body["current_clinic"] == {"id": str(clinic_a), "name": "Clínica A"}
    assert body["role"] == "doctor"
    assert "studies:write" in body["rights"]
    assert "members:write" not in body["rights"]
    assert "user" not in body


def test_clinics_list_with_api_key_has_seats(client, clinic_a, make_api_key, make_user):
    make_user(clinic_a, email="medica@a.example")
    token = make_api_key(clinic_a)
    body = client.get("/api/clinics/clinics/", headers=bearer(token)).get_json()
    assert body == [
        {
            "id": str(clinic_a),
            "name": "Clínica A",
            "seats": {"limit": 3, "used": 1, "members": 1, "pending_invitations": 0},
        }
    ]


def test_api_key_cannot_invite_or_remove(client, clinic_a, make_api_key, make_user):
    doctor_id = make_user(clinic_a, email="medica@a.example")
    token = make_api_key(clinic_a)
    invite = client.post(
        "/api/clinics/clinics/invite/",
        headers=bearer(token),
        json={"email": "x@a.example", "role": "doctor"},
    )
    assert invite.status_code == 403
    assert invite.mimetype == "application/problem+json"
    assert invite.get_json()["code"] == "admin_required"
    remove = client.delete(
        "/api/clinics/clinics/remove_doctor/",
        headers=bearer(token),
        json={"user_id": str(doctor_id)},
    )
    assert remove.status_code == 403


def test_api_key_reads_members_and_users(client, clinic_a, make_api_key, make_user, make_clinic):
    make_user(clinic_a, role="admin", email="admin@a.example")
    make_user(clinic_a, email="medica@a.example")
    make_user(make_clinic("Clínica B"), email="outra@b.example")
    token = make_api_key(clinic_a)
    doctors = client.get("/api/clinics/clinics/doctors/", headers=bearer(token)).get_json()
    assert [(m["email"], m["role"], m["status"]) for m in doctors] == [
        ("admin@a.example", "admin", "active"),
        ("medica@a.example", "doctor", "active"),
    ]
    users = client.get("/api/auth/users/", headers=bearer(token)).get_json()
    assert sorted(u["email"] for u in users) == ["admin@a.example", "medica@a.example"]


def test_admin_invites_through_api(app, client, clinic_a, make_user, user_tokens):
    admin_id = make_user(clinic_a, role="admin", email="admin@a.example")
    response = client.post(
        "/api/clinics/clinics/invite/",
        headers=user_tokens(admin_id),
        json={"email": "Nova@A.example", "role": "doctor"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["email"] == "nova@a.example"
    assert body["role"] == "doctor"
    assert body["status"] == "pending"
    assert outbox_messages(app)[-1]["To"] == "nova@a.example"


def test_api_invite_errors(client, clinic_a, make_user, user_tokens):
    admin_id = make_user(clinic_a, role="admin", email="admin@a.example")
    headers = user_tokens(admin_id) | {"Accept-Language": "en"}
    bad_email = client.post(
        "/api/clinics/clinics/invite/", headers=headers, json={"email": "no", "role": "doctor"}
    )
    assert bad_email.status_code == 400
    assert bad_email.get_json()["code"] == "invalid_email"
    bad_role = client.post(
        "/api/clinics/clinics/invite/", headers=headers, json={"email": "a@a.example", "role": "x"}
    )
    assert bad_role.status_code == 400
    assert bad_role.get_json()["code"] == "invalid_role"
    not_json = client.post("/api/clinics/clinics/invite/", headers=headers, data="email=x")
    assert not_json.status_code == 400
    assert not_json.get_json()["code"] == "invalid_body"

    for number in (1, 2):
        created = client.post(
            "/api/clinics/clinics/invite/",
            headers=headers,
            json={"email": f"m{number}@a.example", "role": "doctor"},
        )
        assert created.status_code == 201
    full = client.post(
        "/api/clinics/clinics/invite/",
        headers=headers,
        json={"email": "m3@a.example", "role": "doctor"},
    )
    assert full.status_code == 409
    assert full.get_json()["code"] == "seat_limit_reached"
    assert "uses 3 of its 3 seats" in full.get_json()["detail"]


def test_doctor_token_cannot_invite(client, clinic_a, make_user, user_tokens):
    doctor_id = make_user(clinic_a, email="medica@a.example")
    response = client.post(
        "/api/clinics/clinics/invite/",
        headers=user_tokens(doctor_id),
        json={"email": "x@a.example", "role": "doctor"},
    )
    assert response.status_code == 403


def test_remove_doctor_ends_their_token_access(client, clinic_a, make_user, user_tokens):
    admin_id = make_user(clinic_a, role="admin", email="admin@a.example")
    doctor_id = make_user(clinic_a, email="medica@a.example")
    assert client.get("/api/auth/users/me/", headers=user_tokens(doctor_id)).status_code == 200
    response = client.delete(
        "/api/clinics/clinics/remove_doctor/",
        headers=user_tokens(admin_id),
        json={"user_id": str(doctor_id)},
    )
    assert response.status_code == 200
    assert response.get_json()["status"] == "removed"
    after = client.get("/api/auth/users/me/", headers=user_tokens(doctor_id))
    assert after.status_code == 403
    assert after.get_json()["code"] == "no_active_membership"
    again = client.delete(
        "/api/clinics/clinics/remove_doctor/",
        headers=user_tokens(admin_id),
        json={"user_id": str(doctor_id)},
    )
    assert again.status_code == 404


def test_last_admin_cannot_be_removed_through_api(client, clinic_a, make_user, user_tokens):
    admin_id = make_user(clinic_a, role="admin", email="admin@a.example")
    response = client.delete(
        "/api/clinics/clinics/remove_doctor/",
        headers=user_tokens(admin_id),
        json={"user_id": str(admin_id)},
    )
    assert response.status_code == 409
    assert response.get_json()["code"] == "last_admin"


def test_clinic_header_chooses_among_memberships(app, client, make_clinic, make_user, user_tokens):
    from portal.clinics.models import Membership, Role
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_a, clinic_b = make_clinic("Clínica A"), make_clinic("Clínica B")
    other = make_clinic("Clínica C")
    user_id = make_user(clinic_a, email="dupla@example.com")
    with app.app_context(), all_clinics():
        db.session.add(Membership(user_id=user_id, clinic_id=clinic_b, role=Role.ADMIN))
        db.session.commit()
    headers = user_tokens(user_id)

    missing = client.get("/api/auth/users/me/", headers=headers)
    assert missing.status_code == 400
    assert missing.get_json()["code"] == "clinic_required"
    in_b = client.get("/api/auth/users/me/", headers=headers | {"X-Clinic-ID": str(clinic_b)})
    assert in_b.status_code == 200
    body = in_b.get_json()
    assert body["current_clinic"]["id"] == str(clinic_b)
    assert body["role"] == "admin"
    assert sorted(m["clinic_name"] for m in body["memberships"]) == ["Clínica A", "Clínica B"]
    for foreign in (str(other), str(uuid.uuid4()), "not-a-uuid"):
        response = client.get("/api/auth/users/me/", headers=headers | {"X-Clinic-ID": foreign})
        assert response.status_code == 404, foreign
        assert response.get_json()["code"] == "clinic_not_found"
    clinics = client.get(
        "/api/clinics/clinics/", headers=headers | {"X-Clinic-ID": str(clinic_a)}
    ).get_json()
    assert sorted((c["name"], c["role"]) for c in clinics) == [
        ("Clínica A", "doctor"),
        ("Clínica B", "admin"),
    ]


def test_single_membership_implies_clinic(client, clinic_a, make_user, user_tokens):
    user_id = make_user(clinic_a, email="medica@a.example")
    body = client.get("/api/auth/users/me/", headers=user_tokens(user_id)).get_json()
    assert body["type"] == "user"
    assert body["current_clinic"]["id"] == str(clinic_a)
    assert body["user"]["email"] == "medica@a.example"


def test_user_token_uploads_to_chosen_clinic(
    app, client, make_clinic, make_user, user_tokens, queued
):
    import io

    from portal.clinics.models import Membership, Role
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics
    from tests.web.conftest import post_multipart, zip_bytes

    clinic_a, clinic_b = make_clinic("Clínica A"), make_clinic("Clínica B")
    user_id = make_user(clinic_a, email="dupla@example.com")
    with app.app_context(), all_clinics():
        db.session.add(Membership(user_id=user_id, clinic_id=clinic_b, role=Role.DOCTOR))
        db.session.commit()
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        user_tokens(user_id) | {"X-Clinic-ID": str(clinic_b)},
    )
    assert response.status_code == 202
    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(response.get_json()["id"]))
        assert study.clinic_id == clinic_b
        assert study.uploaded_by_user_id == user_id
