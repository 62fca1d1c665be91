"""Webhook endpoints and study events: register, enable, disable, delete, record events.

Functions flush; the caller commits, then queues the delivery tasks it is given.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from portal.clinics.models import Clinic, User
from portal.db_types import utcnow
from portal.errors import NotFound, UserFacingError
from portal.extensions import db
from portal.studies.models import Attempt, StudyStatus
from portal.tenancy import scoped
from portal.webhooks import guard, signing
from portal.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

logger = logging.getLogger(__name__)

#: How many deliveries the endpoint page lists, newest first.
DELIVERY_HISTORY_LIMIT = 50

EVENT_FOR_STATUS = {
    StudyStatus.SUCCEEDED: WebhookEvent.STUDY_SUCCEEDED,
    StudyStatus.FAILED: WebhookEvent.STUDY_FAILED,
}


class WebhookUrlRejected(UserFacingError):
    code = "webhook_url_rejected"
    status = 400
    title = _l("Invalid webhook URL")


#: Messages for `guard.UrlRejected` codes when an admin registers a URL.
URL_REJECTION_MESSAGES = {
    guard.INVALID_URL: _l(
        "The URL is invalid. Enter an https:// URL without a user name, password or fragment."
    ),
    guard.HTTPS_REQUIRED: _l("The URL must start with https://."),
    guard.HOST_NOT_FOUND: _l("The host name could not be resolved. Check the URL's host."),
    guard.ADDRESS_NOT_ALLOWED: _l(
        "The host resolves to an address that is not public (%(reason)s). Webhooks are sent "
        "only to public internet addresses."
    ),
}


#: Names of the address classes `guard.address_rejection_reason` returns.
ADDRESS_CLASS_TITLES = {
    "loopback": _l("loopback"),
    "private": _l("private network"),
    "link_local": _l("link-local"),
    "multicast": _l("multicast"),
    "unspecified": _l("unspecified"),
    "cgnat": _l("carrier-grade NAT"),
    "reserved": _l("reserved"),
    "metadata": _l("cloud metadata service"),
}


def create_endpoint(
    clinic: Clinic,
    *,
    url: str,
    events: Iterable[str],
    created_by: User | None,
    secret_key: str,
    allow_loopback_http: bool,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint after checking its URL; return it and its secret in clear.

    The secret in clear exists only in the return value: show it once and drop it.
    """
    url = url.strip()
    try:
        guard.resolve_target(url, allow_loopback_http=allow_loopback_http)
    except guard.UrlRejected as error:
        reason = ADDRESS_CLASS_TITLES.get(error.reason, error.reason)
        raise WebhookUrlRejected(URL_REJECTION_MESSAGES[error.code], reason=reason) from None
    chosen = [event.value for event in WebhookEvent if event.value in set(events)]
    if not chosen:
        raise ValueError("a webhook endpoint needs at least one event")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        clinic_id=clinic.id,
        url=url,
        events=chosen,
        secret_encrypted=signing.encrypt_secret(secret, secret_key=secret_key),
        secret_prefix=secret[: len(signing.SECRET_PREFIX) + 4],
        is_active=True,
        created_by_id=created_by.id if created_by else None,
    )
    db.session.add(endpoint)
    db.session.flush()
    logger.info(
        "user %s registered webhook endpoint %s of clinic %s for %s",
        created_by.id if created_by else "-",
        endpoint.id,
        clinic.id,
        ",".join(chosen),
    )
    return endpoint, secret


def list_endpoints(clinic: Clinic) -> list[WebhookEndpoint]:
    query = scoped(WebhookEndpoint, clinic.id).order_by(WebhookEndpoint.created_at)
    return list(db.session.scalars(query))


def get_endpoint_or_404(clinic: Clinic, endpoint_id: str | uuid.UUID) -> WebhookEndpoint:
    try:
        endpoint_uuid = uuid.UUID(str(endpoint_id))
    except ValueError:
        raise NotFound() from None
    endpoint = db.session.scalar(
        scoped(WebhookEndpoint, clinic.id).where(WebhookEndpoint.id == endpoint_uuid)
    )
    if endpoint is None:
        raise NotFound()
    return endpoint


def list_deliveries(
    endpoint: WebhookEndpoint, *, limit: int = DELIVERY_HISTORY_LIMIT
) -> list[WebhookDelivery]:
    query = (
        scoped(WebhookDelivery, endpoint.clinic_id)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(query))


def set_endpoint_active(endpoint: WebhookEndpoint, active: bool, *, actor: User) -> None:
    """Enable or disable an endpoint; a disabled one gets no new events and sends nothing.

    Deliveries that are pending when it is disabled wait, and go out after it is enabled.
    """
    endpoint.is_active = active
    db.session.flush()
    logger.info(
        "user %s %s webhook endpoint %s",
        actor.id,
        "enabled" if active else "disabled",
        endpoint.id,
    )


def delete_endpoint(endpoint: WebhookEndpoint, *, actor: User) -> None:
    """Delete an endpoint with its delivery history; pending deliveries are dropped."""
    endpoint_id = endpoint.id
    db.session.delete(endpoint)
    db.session.flush()
    logger.info("user %s deleted webhook endpoint %s", actor.id, endpoint_id)


def record_study_event(attempt_id: uuid.UUID, status: StudyStatus) -> list[uuid.UUID]:
    """Add a pending delivery of the attempt's terminal event for each subscribed endpoint.

    Runs in the transaction that moves the attempt to `status`, so the event exists
    exactly when the status does. Returns the ids of the endpoints that got a delivery;
    the caller queues them after the commit. Statuses other than succeeded and failed
    (cancelled) send no event.
    """
    event = EVENT_FOR_STATUS.get(status)
    if event is None:
        return []
    row = db.session.execute(
        select(Attempt.clinic_id, Attempt.study_id, Attempt.number).where(Attempt.id == attempt_id)
    ).one()
    endpoints = db.session.scalars(
        scoped(WebhookEndpoint, row.clinic_id).where(WebhookEndpoint.is_active.is_(True))
    ).all()
    subscribed = [endpoint for endpoint in endpoints if endpoint.subscribes_to(event)]
    if not subscribed:
        return []
    now = utcnow()
    event_id = uuid.uuid4()
    body = build_event_body(
        event_id=event_id,
        event=event,
        study_id=row.study_id,
        status=status,
        attempt_number=row.number,
        occurred_at=now.isoformat().replace("+00:00", "Z"),
    )
    for endpoint in subscribed:
        db.session.add(
            WebhookDelivery(
                clinic_id=row.clinic_id,
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=event,
                study_id=row.study_id,
                payload=body,
                created_at=now,
                next_attempt_at=now,
            )
        )
    db.session.flush()
    logger.info(
        "event %s (%s) of study %s recorded for %d webhook endpoints",
        event_id,
        event.value,
        row.study_id,
        len(subscribed),
    )
    return [endpoint.id for endpoint in subscribed]


def build_event_body(
    *,
    event_id: uuid.UUID,
    event: WebhookEvent,
    study_id: uuid.UUID,
    status: StudyStatus,
    attempt_number: int,
    occurred_at: str,
) -> str:
    """Serialise an event: ids, status and time only, never patient data."""
    return json.dumps(
        {
            "id": str(event_id),
            "type": event.value,
            "study_id": str(study_id),
            "status": status.value,
            "attempt": attempt_number,
            "occurred_at": occurred_at,
        },
        separators=(",", ":"),
    )
