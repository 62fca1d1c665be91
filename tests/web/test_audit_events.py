"""Each audited action of pages and API produces exactly its event.

Every test checks the action, the actor (type, id, role), the target, the outcome and
that the details hold no patient data, token or URL.
"""

from __future__ import annotations

import io
import uuid

import pytest

from portal.audit.models import ActorType, Outcome
from tests.web.audit_helpers import EventWatch, assert_clean, events_of
from tests.web.clinic_helpers import create_invitation
from tests.web.conftest import mark_succeeded, post_multipart, zip_bytes


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def upload_page(client) -> uuid.UUID:
    response = post_multipart(
        client,
        "/studies/new",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "estudo.zip"), "categories": ["lung"]},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return uuid.UUID(response.headers["Location"].rsplit("/", 1)[1])


def upload_api(client, token) -> uuid.UUID:
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "estudo.zip")},
        bearer(token),
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return uuid.UUID(response.get_json()["id"])


def api_key_id(app, token: str) -> str:
    from sqlalchemy import select

    from portal.clinics.models import ApiKey
    from portal.extensions import db
    from portal.tenancy import all_clinics

    key_id = token.removeprefix("vzm_").split("_", 1)[0]
    with app.app_context(), all_clinics():
        return str(db.session.scalar(select(ApiKey.id).where(ApiKey.key_id == key_id)))


def make_succeeded(app, study_id: uuid.UUID) -> None:
    from portal.studies.models import ArtifactKind

    mark_succeeded(app, study_id, [ArtifactKind.IMAGE_NIFTI, ArtifactKind.MASK_NIFTI])


@pytest.fixture
def doctor(app, client, make_clinic, make_user, login, queued):
    """Sign in a doctor of a new clinic; return (clinic id, user id)."""
    clinic_id = make_clinic()
    user_id = make_user(clinic_id)
    login(user_id)
    return clinic_id, user_id


@pytest.fixture
def admin(app, client, make_clinic, make_user, login, queued):
    """Sign in an admin of a new clinic; return (clinic id, user id)."""
    clinic_id = make_clinic()
    user_id = make_user(clinic_id, role="admin", email="chefe@example.com")
    login(user_id)
    return clinic_id, user_id


def only_event(watch: EventWatch):
    events = watch.new_events()
    assert len(events) == 1, [event.action for event in events]
    assert_clean(events[0])
    return events[0]


def assert_user_actor(event, user_id, role):
    assert event.actor_type == ActorType.USER
    assert event.actor_id == str(user_id)
    assert event.actor_role == role


# Studies: upload, cancel, run again, delete.


def test_page_upload_records_study_uploaded(app, client, doctor):
    clinic_id, user_id = doctor
    watch = EventWatch(app, clinic_id)

    study_id = upload_page(client)

    event = only_event(watch)
    assert event.action == "study.uploaded"
    assert event.outcome == Outcome.SUCCESS
    assert_user_actor(event, user_id, "doctor")
    assert (event.target_type, event.target_id) == ("study", str(study_id))
    assert event.details == {"size_bytes": event.details["size_bytes"], "categories": ["lung"]}
    assert event.request_id
    assert event.ip == "127.0.0.1"


def test_api_upload_records_api_key_actor(app, client, make_clinic, make_api_key, queued):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    watch = EventWatch(app, clinic_id)

    study_id = upload_api(client, token)

    event = only_event(watch)
    assert event.action == "study.uploaded"
    assert event.actor_type == ActorType.API_KEY
    assert event.actor_id == api_key_id(app, token)
    assert event.actor_role == "doctor"
    assert event.target_id == str(study_id)


def test_page_cancel_records_study_cancelled(app, client, doctor):
    clinic_id, user_id = doctor
    study_id = upload_page(client)
    watch = EventWatch(app, clinic_id)

    assert client.post(f"/studies/{study_id}/cancel").status_code == 302

    event = only_event(watch)
    assert event.action == "study.cancelled"
    assert_user_actor(event, user_id, "doctor")
    assert (event.target_type, event.target_id) == ("study", str(study_id))
    assert event.details == {"attempt": 1}


def test_api_cancel_records_study_cancelled(app, client, make_clinic, make_api_key, queued):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_api(client, token)
    watch = EventWatch(app, clinic_id)

    assert client.post(f"/api/studies/{study_id}/cancel/", headers=bearer(token)).status_code == 200

    event = only_event(watch)
    assert event.action == "study.cancelled"
    assert event.actor_type == ActorType.API_KEY
    assert event.target_id == str(study_id)


def test_page_rerun_records_study_rerun(app, client, doctor):
    clinic_id, user_id = doctor
    study_id = upload_page(client)
    client.post(f"/studies/{study_id}/cancel")
    watch = EventWatch(app, clinic_id)

    response = client.post(f"/studies/{study_id}/rerun", data={"series_id": "bbbbbbbbbbbb"})

    assert response.status_code == 302
    event = only_event(watch)
    assert event.action == "study.rerun"
    assert_user_actor(event, user_id, "doctor")
    assert event.target_id == str(study_id)
    assert event.details == {"attempt": 2, "series_picked": True}


def test_api_delete_records_study_deleted(app, client, make_clinic, make_api_key, queued):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_api(client, token)
    watch = EventWatch(app, clinic_id)

    assert client.delete(f"/api/studies/{study_id}/", headers=bearer(token)).status_code == 204

    event = only_event(watch)
    assert event.action == "study.deleted"
    assert event.actor_type == ActorType.API_KEY
    assert event.target_id == str(study_id)
    # The study was still queued, so deleting it cancelled its attempt in the same event.
    assert event.details == {"cancelled_attempt": 1}


def test_rolled_back_delete_records_nothing(app, client, doctor, monkeypatch):
    clinic_id, _user_id = doctor
    study_id = upload_page(client)
    watch = EventWatch(app, clinic_id)

    def failing_commit():
        raise RuntimeError("database went away at commit")

    monkeypatch.setattr("portal.extensions.db.session.commit", failing_commit)
    response = client.post(f"/studies/{study_id}/delete")

    assert response.status_code == 500
    assert watch.new_events() == []


# Views of studies, reports, the viewer and results.


def test_study_page_records_study_viewed(app, client, doctor):
    clinic_id, user_id = doctor
    study_id = upload_page(client)
    watch = EventWatch(app, clinic_id)

    assert client.get(f"/studies/{study_id}").status_code == 200

    event = only_event(watch)
    assert event.action == "study.viewed"
    assert_user_actor(event, user_id, "doctor")
    assert (event.target_type, event.target_id) == ("study", str(study_id))
    assert event.details == {"channel": "page", "report_included": False}


def test_status_polls_record_nothing(app, client, doctor):
    clinic_id, _user_id = doctor
    study_id = upload_page(client)
    watch = EventWatch(app, clinic_id)

    assert client.get(f"/studies/{study_id}/status").status_code == 200

    assert watch.new_events() == []


def test_api_study_records_report_view(app, client, make_clinic, make_api_key, queued):
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_api(client, token)
    with app.app_context(), all_clinics():
        db.session.get(Study, study_id).latest_attempt.report = {"series": [], "warnings": []}
        db.session.commit()
    watch = EventWatch(app, clinic_id)

    assert client.get(f"/api/studies/{study_id}/", headers=bearer(token)).status_code == 200

    event = only_event(watch)
    assert event.action == "study.viewed"
    assert event.actor_type == ActorType.API_KEY
    assert event.target_id == str(study_id)
    assert event.details == {"channel": "api", "report_included": True}


def test_api_attempts_records_study_viewed(app, client, make_clinic, make_api_key, queued):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_api(client, token)
    watch = EventWatch(app, clinic_id)

    response = client.get(f"/api/studies/{study_id}/attempts/", headers=bearer(token))

    assert response.status_code == 200
    event = only_event(watch)
    assert event.action == "study.viewed"
    assert event.details == {"channel": "api", "part": "attempts"}


def test_viewer_page_records_viewer_opened(app, client, doctor):
    clinic_id, user_id = doctor
    study_id = upload_page(client)
    make_succeeded(app, study_id)
    watch = EventWatch(app, clinic_id)

    assert client.get(f"/studies/{study_id}/viewer").status_code == 200

    event = only_event(watch)
    assert event.action == "viewer.opened"
    assert_user_actor(event, user_id, "doctor")
    assert event.target_id == str(study_id)
    assert event.details == {"attempt": 1}


def test_viewer_data_records_issued_urls(app, client, doctor):
    clinic_id, user_id = doctor
    study_id = upload_page(client)
    make_succeeded(app, study_id)
    watch = EventWatch(app, clinic_id)

    response = client.get(f"/studies/{study_id}/viewer-data")

    assert response.status_code == 200
    assert "X-Amz-Signature" in response.get_json()["image_url"]
    event = only_event(watch)
    assert event.action == "result.urls_issued"
    assert_user_actor(event, user_id, "doctor")
    assert event.target_id == str(study_id)
    assert event.details == {
        "artifacts": ["image_nifti", "mask_nifti"],
        "attempt": 1,
        "grid": "model",
    }


def test_api_result_records_issued_urls(app, client, make_clinic, make_api_key, queued):
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_api(client, token)
    make_succeeded(app, study_id)
    watch = EventWatch(app, clinic_id)

    response = client.get(f"/api/studies/{study_id}/result/", headers=bearer(token))

    assert response.status_code == 200
    event = only_event(watch)
    assert event.action == "result.urls_issued"
    assert event.actor_type == ActorType.API_KEY
    assert event.details["artifacts"] == ["image_nifti", "mask_nifti"]


# Invitations, members and API keys.


def test_invite_records_invitation_sent(app, client, admin):
    clinic_id, user_id = admin
    watch = EventWatch(app, clinic_id)

    response = client.post(
        "/clinic/invitations", data={"email": "nova@example.com", "role": "doctor"}
    )

    assert response.status_code == 302
    event = only_event(watch)
    assert event.action == "invitation.sent"
    assert_user_actor(event, user_id, "admin")
    assert event.target_type == "invitation"
    assert event.details == {"role": "doctor", "resent": False}


def test_resend_records_invitation_sent(app, client, admin):
    clinic_id, user_id = admin
    invitation_id, _path = create_invitation(app, clinic_id, "nova@example.com")
    watch = EventWatch(app, clinic_id)

    response = client.post(f"/clinic/invitations/{invitation_id}/resend")

    assert response.status_code == 302
    event = only_event(watch)
    assert event.action == "invitation.sent"
    assert_user_actor(event, user_id, "admin")
    assert event.target_id == str(invitation_id)
    assert event.details == {"role": "doctor", "resent": True}


def test_revoke_records_invitation_revoked(app, client, admin):
    clinic_id, user_id = admin
    invitation_id, _path = create_invitation(app, clinic_id, "nova@example.com")
    watch = EventWatch(app, clinic_id)

    assert client.post(f"/clinic/invitations/{invitation_id}/revoke").status_code == 302

    event = only_event(watch)
    assert event.action == "invitation.revoked"
    assert_user_actor(event, user_id, "admin")
    assert event.target_id == str(invitation_id)


def test_accept_records_invitation_accepted(app, client, make_clinic, make_user, login):
    clinic_id = make_clinic()
    invitation_id, path = create_invitation(app, clinic_id, "nova@example.com", role="admin")
    newcomer = make_user(None, email="nova@example.com")
    login(newcomer)
    watch = EventWatch(app, clinic_id)

    assert client.post(f"{path}/accept").status_code == 302

    event = only_event(watch)
    assert event.action == "invitation.accepted"
    assert_user_actor(event, newcomer, "admin")
    assert event.target_id == str(invitation_id)
    assert event.details["role"] == "admin"
    assert uuid.UUID(event.details["membership_id"])


def membership_of(app, clinic_id, user_id):
    from sqlalchemy import select

    from portal.clinics.models import Membership
    from portal.extensions import db
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        return db.session.scalar(
            select(Membership.id).where(
                Membership.clinic_id == clinic_id, Membership.user_id == user_id
            )
        )


def test_role_change_records_member_role_changed(app, client, admin, make_user):
    clinic_id, user_id = admin
    member = make_user(clinic_id, email="outra@example.com")
    membership_id = membership_of(app, clinic_id, member)
    watch = EventWatch(app, clinic_id)

    response = client.post(f"/clinic/members/{membership_id}/role", data={"role": "admin"})

    assert response.status_code == 302
    event = only_event(watch)
    assert event.action == "member.role_changed"
    assert_user_actor(event, user_id, "admin")
    assert (event.target_type, event.target_id) == ("membership", str(membership_id))
    assert event.details == {"user_id": str(member), "from": "doctor", "to": "admin"}


def test_removal_records_member_removed(app, client, admin, make_user):
    clinic_id, user_id = admin
    member = make_user(clinic_id, email="outra@example.com")
    membership_id = membership_of(app, clinic_id, member)
    watch = EventWatch(app, clinic_id)

    assert client.post(f"/clinic/members/{membership_id}/remove").status_code == 302

    event = only_event(watch)
    assert event.action == "member.removed"
    assert_user_actor(event, user_id, "admin")
    assert event.target_id == str(membership_id)
    assert event.details == {"user_id": str(member), "role": "doctor"}


def test_api_removal_records_member_removed(app, client, make_clinic, make_user):
    from portal.api.principal import USER_TOKEN_VERIFIER
    from portal.clinics.models import User
    from portal.extensions import db

    clinic_id = make_clinic()
    admin_id = make_user(clinic_id, role="admin", email="chefe@example.com")
    member = make_user(clinic_id, email="outra@example.com")
    app.extensions[USER_TOKEN_VERIFIER] = lambda token: (
        db.session.get(User, admin_id) if token == "admin-token" else None
    )
    watch = EventWatch(app, clinic_id)

    response = client.delete(
        "/api/clinics/clinics/remove_doctor/",
        json={"user_id": str(member)},
        headers=bearer("admin-token"),
    )

    assert response.status_code in (200, 204), response.get_data(as_text=True)
    event = only_event(watch)
    assert event.action == "member.removed"
    assert_user_actor(event, admin_id, "admin")


def test_key_creation_records_api_key_created(app, client, admin):
    clinic_id, user_id = admin
    watch = EventWatch(app, clinic_id)

    response = client.post("/clinic/api-keys/", data={"name": "RIS"})

    assert response.status_code == 201
    event = only_event(watch)
    assert event.action == "api_key.created"
    assert_user_actor(event, user_id, "admin")
    assert event.target_type == "api_key"
    assert event.details["expires"] is False
    # The public key id is recorded; the secret part of the token is not.
    token = response.get_data(as_text=True).split("vzm_", 1)[1].split("<", 1)[0].strip()
    assert token.split("_", 1)[1] not in str(event.details)


def test_key_revocation_records_api_key_revoked(app, client, admin, make_api_key):
    clinic_id, user_id = admin
    token = make_api_key(clinic_id)
    key_id = token.removeprefix("vzm_").split("_", 1)[0]
    watch = EventWatch(app, clinic_id)

    assert client.post(f"/clinic/api-keys/{key_id}/revoke").status_code == 302

    event = only_event(watch)
    assert event.action == "api_key.revoked"
    assert_user_actor(event, user_id, "admin")
    assert event.target_id == api_key_id(app, token)
    assert event.details == {"key_id": key_id}


def test_cli_key_creation_records_system_actor(app, make_clinic):
    clinic_id = make_clinic()
    watch = EventWatch(app, clinic_id)

    result = app.test_cli_runner().invoke(
        args=["api-keys", "create", "--clinic", str(clinic_id), "--name", "RIS"]
    )

    assert result.exit_code == 0, result.output
    event = only_event(watch)
    assert event.action == "api_key.created"
    assert event.actor_type == ActorType.SYSTEM
    assert event.actor_id is None
    assert event.ip is None


# Access denied.


def test_other_clinic_study_records_denial(app, client, make_clinic, make_user, login, queued):
    clinic_a, clinic_b = make_clinic("A"), make_clinic("B")
    doctor_b = make_user(clinic_b, email="b@example.com")
    login(make_user(clinic_a, email="a@example.com"))
    study_a = upload_page(client)
    login(doctor_b)
    watch_a, watch_b = EventWatch(app, clinic_a), EventWatch(app, clinic_b)

    assert client.get(f"/studies/{study_a}").status_code == 404

    assert watch_a.new_events() == []
    event = only_event(watch_b)
    assert event.action == "access.denied"
    assert event.outcome == Outcome.DENIED
    assert_user_actor(event, doctor_b, "doctor")
    assert (event.target_type, event.target_id) == ("study", str(study_a))
    assert event.details == {
        "status": 404,
        "code": "not_found",
        "endpoint": "studies.detail",
        "method": "GET",
    }


def test_doctor_on_admin_page_records_denial(app, client, doctor):
    clinic_id, user_id = doctor
    watch = EventWatch(app, clinic_id)

    assert client.get("/clinic/api-keys/").status_code == 403

    event = only_event(watch)
    assert event.action == "access.denied"
    assert_user_actor(event, user_id, "doctor")
    assert event.details["status"] == 403


def test_api_without_credential_records_denial(app, client):
    watch = EventWatch(app, None)

    response = client.get(f"/api/studies/{uuid.uuid4()}/", headers=bearer("vzm_bad_key"))

    assert response.status_code == 401
    event = only_event(watch)
    assert event.action == "access.denied"
    assert event.actor_type == ActorType.ANONYMOUS
    assert event.clinic_id is None
    assert event.details["status"] == 401
    assert event.target_type == "study"


def test_invitation_token_never_recorded(app, client, make_clinic):
    clinic_id = make_clinic()
    watch = EventWatch(app, None)
    token = "x" * 40

    assert client.get(f"/invitations/{token}").status_code == 404

    event = only_event(watch)
    assert event.action == "access.denied"
    assert event.target_id is None
    assert token not in str(event.details)
    assert events_of(app, clinic_id) == []
