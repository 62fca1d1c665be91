"""Helpers for the audit tests: read a chain's events and check what they may contain."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from portal.audit.details import REDACTED_KEYS
from portal.audit.models import PLATFORM_CHAIN, AuditEvent
from portal.extensions import db
from portal.tenancy import all_clinics

#: Text that must never appear in an event: URL schemes, API key prefixes, the upload's
#: file name, the test users' e-mail domain and a DICOM person-name separator.
FORBIDDEN_FRAGMENTS = ("://", "vzm_", "estudo.zip", "@example.com", "^")


def events_of(app, clinic_id: uuid.UUID | None) -> list[AuditEvent]:
    """Return the events of a clinic's chain (or the platform's for None), in order."""
    chain = str(clinic_id) if clinic_id is not None else PLATFORM_CHAIN
    with app.app_context(), all_clinics():
        events = list(
            db.session.scalars(
                select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            )
        )
        db.session.expunge_all()
    return events


class EventWatch:
    """Remember how long a chain is, then return only the events recorded after that."""

    def __init__(self, app, clinic_id: uuid.UUID | None):
        self.app = app
        self.clinic_id = clinic_id
        self.start = len(events_of(app, clinic_id))

    def new_events(self) -> list[AuditEvent]:
        return events_of(self.app, self.clinic_id)[self.start :]


def assert_clean(event: AuditEvent) -> None:
    """Check that an event's free-form fields hold no forbidden text and nothing was dropped."""
    assert REDACTED_KEYS not in event.details, event.details
    text = f"{event.details} {event.target_id}"
    for fragment in FORBIDDEN_FRAGMENTS:
        assert fragment not in text, (fragment, text)
