"""Helpers for the clinic tests: the outbox, invitation links, and seeded invitations."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

LINK_PATTERN = re.compile(r"https?://\S+/invitations/[A-Za-z0-9_\-]+")


def outbox_messages(app) -> list[email.message.EmailMessage]:
    """Return the messages written to the outbox, oldest first."""
    outbox = Path(app.config["PORTAL_SETTINGS"].outbox_dir)
    if not outbox.is_dir():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    ]


def text_body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def invitation_link(message) -> str:
    match = LINK_PATTERN.search(text_body(message))
    assert match, "no invitation link in the e-mail"
    return match.group(0)


def link_path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def create_invitation(app, clinic_id, email, *, role="doctor", locale="pt_BR", check_seats=True):
    """Invite `email` through the service and return (invitation id, link path)."""
    import dataclasses

    from portal.clinics.invitations import invite
    from portal.clinics.models import Clinic
    from portal.extensions import db
    from portal.tenancy import set_current_clinic

    settings = dataclasses.replace(
        app.config["PORTAL_SETTINGS"], enable_seat_limit_check=check_seats
    )
    with app.test_request_context():
        set_current_clinic(clinic_id)
        invitation = invite(
            db.session.get(Clinic, clinic_id),
            email=email,
            role=role,
            locale=locale,
            invited_by=None,
            settings=settings,
        )
        db.session.commit()
        invitation_id = invitation.id
    return invitation_id, link_path(invitation_link(outbox_messages(app)[-1]))
