"""The clinic page, invitations through the web forms, accepting them, roles and removal."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.web.clinic_helpers import (
    create_invitation,
    invitation_link,
    link_path,
    outbox_messages,
    text_body,
)
from tests.web.conftest import post_multipart, zip_bytes


def membership_of(app, user_id, clinic_id):
    from sqlalchemy import select

    from portal.clinics.models import Membership
    from portal.extensions import db
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        return db.session.scalar(
            select(Membership).where(
                Membership.user_id == user_id, Membership.clinic_id == clinic_id
            )
        )


@pytest.fixture
def clinic_a(make_clinic):
    return make_clinic("Clínica A", seats=3)


@pytest.fixture
def admin_a(clinic_a, make_user, login):
    user_id = make_user(clinic_a, role="admin", email="admin@a.example")
    login(user_id)
    return user_id


def test_clinic_page_shows_seats_members_and_invitations(app, client, clinic_a, admin_a, make_user):
    make_user(clinic_a, email="medica@a.example")
    create_invitation(app, clinic_a, "novo@a.example")
    page = client.get("/clinic/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Clínica A" in page
    assert 'data-used="3" data-limit="3"' in page
    assert "3 of 3 in use (2 members, 1 pending invitations)" in page
    assert "admin@a.example" in page
    assert "medica@a.example" in page
    assert "Admin" in page
    assert "Doctor" in page
    assert "novo@a.example" in page
    assert "Send invitation" in page


def test_invite_form_sends_email_in_chosen_language(app, client, clinic_a, admin_a):
    response = client.post(
        "/clinic/invitations", data={"email": "Nova@A.example", "role": "admin", "locale": "en"}
    )
    assert response.status_code == 302
    message = outbox_messages(app)[-1]
    assert message["To"] == "nova@a.example"
    assert message["Subject"] == "Invitation to Clínica A on Vizier Med"
    assert "as Admin" in text_body(message)
    link = invitation_link(message)
    assert link.startswith("http://127.0.0.1:8000/invitations/")

    client.post("/clinic/invitations", data={"email": "outra@a.example", "role": "doctor"})
    portuguese = outbox_messages(app)[-1]
    assert portuguese["Subject"] == "Convite para Clínica A no Vizier Med"
    assert "Médico" in text_body(portuguese) or "médico" in text_body(portuguese)


def test_invite_rejects_bad_email(client, clinic_a, admin_a):
    response = client.post(
        "/clinic/invitations",
        data={"email": "not-an-email", "role": "doctor"},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 400
    assert "Enter a valid e-mail address" in response.get_data(as_text=True)


def test_invite_past_seat_limit_says_seats_in_use(app, client, clinic_a, admin_a, make_user):
    make_user(clinic_a, email="medica@a.example")
    create_invitation(app, clinic_a, "um@a.example")
    response = client.post(
        "/clinic/invitations",
        data={"email": "dois@a.example", "role": "doctor"},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 409
    assert "The clinic uses 3 of its 3 seats" in response.get_data(as_text=True)


def test_seat_check_can_be_disabled(make_app, make_clinic, make_user, login):
    app = make_app(enable_seat_limit_check=False)
    client = app.test_client()
    from portal.clinics.services import create_clinic
    from portal.extensions import db

    with app.app_context():
        clinic_id = create_clinic("Clínica Pequena", seat_limit=1).id
        db.session.commit()
    from portal.clinics.models import Identity, Membership, Role, User
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        user = User(email="admin@p.example", is_email_verified=True)
        db.session.add(Identity(issuer="http://idp.test", subject="admin-p", user=user))
        db.session.add(Membership(user=user, clinic_id=clinic_id, role=Role.ADMIN))
        db.session.commit()
        user_id = user.id
    login(user_id, test_client=client)
    response = client.post("/clinic/invitations", data={"email": "x@p.example", "role": "doctor"})
    assert response.status_code == 302


def test_doctor_cannot_invite(client, clinic_a, make_user, login):
    login(make_user(clinic_a, email="medica@a.example"))
    response = client.post("/clinic/invitations", data={"email": "x@a.example", "role": "doctor"})
    assert response.status_code == 403
    page = client.get("/clinic/").get_data(as_text=True)
    assert "Send invitation" not in page
    assert "Enviar convite" not in page


def test_accept_flow_joins_clinic_once(app, clinic_a, make_user, login):
    _invitation_id, path = create_invitation(app, clinic_a, "Convidada@A.example")
    anonymous = app.test_client()
    page = anonymous.get(path, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Sign in to accept" in page
    assert f"/auth/login?next={path}" in page

    invited = app.test_client()
    user_id = make_user(None, email="convidada@a.example")
    login(user_id, test_client=invited)
    assert "Accept the invitation" in invited.get(path, headers={"Accept-Language": "en"}).text
    accepted = invited.post(f"{path}/accept")
    assert accepted.status_code == 302
    assert accepted.headers["Location"] == "/studies/"
    membership = membership_of(app, user_id, clinic_a)
    assert membership.role == "doctor"
    assert membership.status == "active"
    assert invited.get("/studies/").status_code == 200

    again = invited.post(f"{path}/accept", headers={"Accept-Language": "en"})
    assert again.status_code == 409
    assert "already accepted" in again.get_data(as_text=True)


def test_accept_with_other_email_is_refused(app, clinic_a, make_user, login):
    _invitation_id, path = create_invitation(app, clinic_a, "maria@a.example")
    other = app.test_client()
    user_id = make_user(None, email="joana@a.example")
    login(user_id, test_client=other)
    response = other.post(f"{path}/accept", headers={"Accept-Language": "en"})
    assert response.status_code == 403
    body = response.get_data(as_text=True)
    assert "sent to m***@a.example" in body
    assert "joana@a.example" in body
    assert membership_of(app, user_id, clinic_a) is None


def test_accept_with_unverified_email_is_refused(app, clinic_a, make_user, login):
    _invitation_id, path = create_invitation(app, clinic_a, "maria@a.example")
    unverified = app.test_client()
    user_id = make_user(None, email="maria@a.example", verified=False)
    login(user_id, test_client=unverified)
    response = unverified.post(f"{path}/accept", headers={"Accept-Language": "en"})
    assert response.status_code == 403
    assert "not verified" in response.get_data(as_text=True)
    assert membership_of(app, user_id, clinic_a) is None


def test_expired_invitation_is_refused(app, clinic_a, make_user, login):
    from portal.clinics.models import Invitation
    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.tenancy import all_clinics

    invitation_id, path = create_invitation(app, clinic_a, "maria@a.example")
    with app.app_context(), all_clinics():
        db.session.get(Invitation, invitation_id).expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    admin = app.test_client()
    login(make_user(clinic_a, role="admin", email="admin@a.example"), test_client=admin)
    clinic_page = admin.get("/clinic/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "maria@a.example" in clinic_page
    assert "Expired" in clinic_page

    invited = app.test_client()
    login(make_user(None, email="maria@a.example"), test_client=invited)
    assert invited.get(path).status_code == 410
    response = invited.post(f"{path}/accept", headers={"Accept-Language": "en"})
    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)

    assert admin.post(f"/clinic/invitations/{invitation_id}/resend").status_code == 302
    new_path = link_path(invitation_link(outbox_messages(app)[-1]))
    assert invited.post(f"{new_path}/accept").status_code == 302


def test_invitation_expires_after_seven_days_by_default(app, clinic_a):
    from portal.clinics.models import Invitation
    from portal.extensions import db
    from portal.tenancy import all_clinics

    invitation_id, _path = create_invitation(app, clinic_a, "maria@a.example")
    with app.app_context(), all_clinics():
        invitation = db.session.get(Invitation, invitation_id)
        assert invitation.expires_at - invitation.created_at == timedelta(days=7)


def test_resend_replaces_link_and_revoke_closes_it(app, client, clinic_a, admin_a):
    invitation_id, old_path = create_invitation(app, clinic_a, "maria@a.example")
    assert client.post(f"/clinic/invitations/{invitation_id}/resend").status_code == 302
    new_path = link_path(invitation_link(outbox_messages(app)[-1]))
    assert new_path != old_path
    assert client.get(old_path).status_code == 404
    assert client.get(new_path).status_code == 200

    assert client.post(f"/clinic/invitations/{invitation_id}/revoke").status_code == 302
    assert client.get(new_path).status_code == 410
    page = client.get("/clinic/").get_data(as_text=True)
    assert "maria@a.example" not in page


def test_unknown_invitation_token_is_404(client):
    assert client.get("/invitations/" + "x" * 43).status_code == 404


def test_role_change_and_last_admin_protection(app, client, clinic_a, admin_a, make_user):
    doctor_id = make_user(clinic_a, email="medica@a.example")
    doctor = membership_of(app, doctor_id, clinic_a)
    admin = membership_of(app, admin_a, clinic_a)

    demote_self = client.post(
        f"/clinic/members/{admin.id}/role",
        data={"role": "doctor"},
        headers={"Accept-Language": "en"},
    )
    assert demote_self.status_code == 409
    assert "at least one administrator" in demote_self.get_data(as_text=True)
    remove_self = client.post(f"/clinic/members/{admin.id}/remove")
    assert remove_self.status_code == 409
    assert membership_of(app, admin_a, clinic_a).role == "admin"

    assert (
        client.post(f"/clinic/members/{doctor.id}/role", data={"role": "admin"}).status_code == 302
    )
    assert membership_of(app, doctor_id, clinic_a).role == "admin"
    assert (
        client.post(f"/clinic/members/{admin.id}/role", data={"role": "doctor"}).status_code == 302
    )
    assert membership_of(app, admin_a, clinic_a).role == "doctor"


def test_removed_doctor_loses_access_and_studies_stay(app, clinic_a, make_user, login, queued):
    admin = app.test_client()
    login(make_user(clinic_a, role="admin", email="admin@a.example"), test_client=admin)
    doctor = app.test_client()
    doctor_id = make_user(clinic_a, email="medica@a.example")
    login(doctor_id, test_client=doctor)
    study_path = post_multipart(
        doctor,
        "/studies/new",
        {
            "file": (__import__("io").BytesIO(zip_bytes({"a": b"b"})), "e.zip"),
            "categories": ["lung"],
        },
    ).headers["Location"]
    membership_id = membership_of(app, doctor_id, clinic_a).id

    confirm = admin.get(
        f"/clinic/members/{membership_id}/remove", headers={"Accept-Language": "en"}
    )
    assert confirm.status_code == 200
    assert "Remove medica from Clínica A?" in confirm.get_data(as_text=True)
    assert admin.post(f"/clinic/members/{membership_id}/remove").status_code == 302

    membership = membership_of(app, doctor_id, clinic_a)
    assert membership.status == "removed"
    assert membership.removed_at is not None
    # With no clinic left, the doctor's session ended: the next request asks for sign-in.
    next_request = doctor.get(study_path)
    assert next_request.status_code == 302
    assert next_request.headers["Location"].startswith("/auth/login")
    assert admin.get(study_path).status_code == 200
    page = admin.get("/clinic/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Removed" in page


def test_member_of_two_clinics_switches(app, make_clinic, make_user, login, queued):
    from portal.clinics.models import Membership, Role
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_a, clinic_b = make_clinic("Clínica A"), make_clinic("Clínica B")
    user_id = make_user(clinic_a, email="dupla@example.com")
    with app.app_context(), all_clinics():
        db.session.add(Membership(user_id=user_id, clinic_id=clinic_b, role=Role.DOCTOR))
        db.session.commit()
    client = app.test_client()
    login(user_id, test_client=client)

    page = client.get("/studies/").get_data(as_text=True)
    assert "Clínica A" in page
    assert "Clínica B" in page
    study_in_a = post_multipart(
        client,
        "/studies/new",
        {
            "file": (__import__("io").BytesIO(zip_bytes({"a": b"b"})), "e.zip"),
            "categories": ["lung"],
        },
    ).headers["Location"]
    assert client.post("/clinic/switch", data={"clinic_id": str(clinic_b)}).status_code == 302
    assert study_in_a not in client.get("/studies/").get_data(as_text=True)
    assert client.get(study_in_a).status_code == 404
    study_in_b = post_multipart(
        client,
        "/studies/new",
        {
            "file": (__import__("io").BytesIO(zip_bytes({"a": b"b"})), "e.zip"),
            "categories": ["lung"],
        },
    ).headers["Location"]

    from portal.studies.models import Study

    with app.app_context(), all_clinics():
        study_b = db.session.get(Study, uuid.UUID(study_in_b.rsplit("/", 1)[1]))
        assert study_b.clinic_id == clinic_b
    assert client.post("/clinic/switch", data={"clinic_id": str(uuid.uuid4())}).status_code == 404
    client.post("/clinic/switch", data={"clinic_id": str(clinic_a)})
    assert client.get(study_in_a).status_code == 200


def test_operator_sees_no_studies_but_manages_seats(app, make_clinic, make_user, login, queued):
    from portal.clinics.models import Clinic, User
    from portal.extensions import db

    clinic_a = make_clinic("Clínica A", seats=4)
    doctor = app.test_client()
    login(make_user(clinic_a, email="medica@a.example"), test_client=doctor)
    study_path = post_multipart(
        doctor,
        "/studies/new",
        {
            "file": (__import__("io").BytesIO(zip_bytes({"a": b"b"})), "e.zip"),
            "categories": ["lung"],
        },
    ).headers["Location"]

    operator_id = make_user(None, email="ops@vizier.example")
    with app.app_context():
        db.session.get(User, operator_id).is_operator = True
        db.session.commit()
    operator = app.test_client()
    login(operator_id, test_client=operator)
    assert operator.get(study_path).status_code == 404
    assert operator.get("/studies/").status_code == 404
    listing = operator.get("/operator/clinics/").get_data(as_text=True)
    assert "Clínica A" in listing
    assert "1 / 4" in listing
    assert (
        operator.post(f"/operator/clinics/{clinic_a}/seats", data={"seats": "9"}).status_code == 302
    )
    with app.app_context():
        assert db.session.get(Clinic, clinic_a).seat_limit == 9
    assert doctor.get("/operator/clinics/").status_code == 404


def test_email_verified_claim_accepts_cognito_string():
    from portal.auth.services import is_true_claim

    assert is_true_claim(True) is True
    assert is_true_claim("true") is True
    assert is_true_claim("True") is True
    assert is_true_claim("false") is False
    assert is_true_claim(None) is False
    assert is_true_claim(1) is False


def test_sign_in_records_verified_email(app):
    from portal.auth.services import user_from_claims
    from portal.extensions import db

    with app.app_context():
        user = user_from_claims(
            "http://idp", {"sub": "s", "email": "a@x.example", "email_verified": "true"}
        )
        db.session.commit()
        assert user.is_email_verified is True
        user = user_from_claims(
            "http://idp", {"sub": "s", "email": "b@x.example", "email_verified": "false"}
        )
        assert user.is_email_verified is False
