"""Sign-in, sign-out and failed sign-in events, through the dev identity provider."""

from __future__ import annotations

from sqlalchemy import select

from portal.audit.models import ActorType, Outcome
from tests.devidp.conftest import DOCTOR
from tests.web import test_sign_in_flow as sign_in_flow
from tests.web.audit_helpers import EventWatch, assert_clean
from tests.web.test_sign_in_flow import callback_path, provider_redirect, start_sign_in

# The dev identity provider and the app signed in through it, as in the sign-in tests.
devidp = sign_in_flow.devidp
app = sign_in_flow.app


def demo_doctor(app):
    """Return the demo clinic's id and the demo doctor's user id."""
    from portal.clinics.models import Identity, Membership
    from portal.extensions import db
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        identity = db.session.scalar(select(Identity).where(Identity.subject == DOCTOR["sub"]))
        membership = db.session.scalar(
            select(Membership).where(Membership.user_id == identity.user_id)
        )
        return membership.clinic_id, identity.user_id


def test_sign_in_recorded_in_member_clinic(app, client):
    clinic_id, user_id = demo_doctor(app)
    clinic_watch, platform_watch = EventWatch(app, clinic_id), EventWatch(app, None)

    response = client.get(callback_path(provider_redirect(start_sign_in(client))))

    assert response.status_code == 302
    events = clinic_watch.new_events()
    assert [event.action for event in events] == ["auth.sign_in"]
    event = events[0]
    assert event.outcome == Outcome.SUCCESS
    assert event.actor_type == ActorType.USER
    assert event.actor_id == str(user_id)
    assert event.actor_role == "doctor"
    assert_clean(event)
    assert platform_watch.new_events() == []


def test_sign_out_recorded(app, client):
    clinic_id, user_id = demo_doctor(app)
    client.get(callback_path(provider_redirect(start_sign_in(client))))
    watch = EventWatch(app, clinic_id)

    assert client.post("/auth/logout").status_code == 302

    events = watch.new_events()
    assert [event.action for event in events] == ["auth.sign_out"]
    assert events[0].actor_id == str(user_id)
    assert events[0].actor_role == "doctor"


def test_cancelled_sign_in_recorded_as_failed(app, client):
    watch = EventWatch(app, None)

    response = client.get("/auth/callback?error=access_denied&error_description=SILVA^MARIA")

    assert response.status_code == 400
    events = watch.new_events()
    assert [event.action for event in events] == ["auth.sign_in"]
    event = events[0]
    assert event.outcome == Outcome.FAILED
    assert event.actor_type == ActorType.ANONYMOUS
    assert event.clinic_id is None
    assert event.details == {"reason": "cancelled"}
    assert_clean(event)


def test_wrong_state_recorded_as_failed(app, client):
    from tests.devidp.conftest import query_params

    watch = EventWatch(app, None)
    params = query_params(provider_redirect(start_sign_in(client)))

    response = client.get(f"/auth/callback?code={params['code']}&state=not-the-state")

    assert response.status_code == 400
    events = watch.new_events()
    assert [event.action for event in events] == ["auth.sign_in"]
    assert events[0].outcome == Outcome.FAILED
    assert events[0].details == {"reason": "mismatching_state_error"}
