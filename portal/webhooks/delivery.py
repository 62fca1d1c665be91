"""Sending deliveries: one endpoint at a time, in event order, with retries for 24 hours.

Order: an endpoint's deliveries go out oldest first. While the oldest pending one waits
for a retry, the newer ones wait behind it, so a receiver never gets event N+1 before
event N has succeeded or finally failed. A task holds the endpoint with a lease (a
compare-and-set on `lease_owner`) while it sends, so two tasks never send to one
endpoint at once.

Retries: a delivery fails an attempt on a connection error, a timeout or any status
other than 2xx, and 3xx too, because redirects are not followed. The next attempt
waits `retry_delay_s` (exponential, with jitter). A delivery that would retry later
than `RETRY_WINDOW` after its event is marked failed, and the next one goes out. A
delivery always gets at least one attempt, even when it waited behind older ones past
its own window.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from portal.db_types import utcnow
from portal.extensions import db
from portal.leases import new_lease_token
from portal.sweeper import queued_task_ids
from portal.tenancy import all_clinics, set_clinic_of
from portal.webhooks import guard, signing, transport
from portal.webhooks.delivery_errors import HTTP_STATUS, REDIRECT_NOT_FOLLOWED, SECRET_UNREADABLE
from portal.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

RETRY_WINDOW = timedelta(hours=24)
FIRST_RETRY_DELAY_S = 30.0
MAX_RETRY_DELAY_S = 3600.0
#: Deliveries one task sends before it queues the endpoint again, so one busy endpoint
#: does not hold a worker for long.
MAX_DELIVERIES_PER_TASK = 100


def retry_delay_s(attempt_count: int, *, rng: random.Random | None = None) -> float:
    """Return the wait after the `attempt_count`-th failed attempt, in seconds.

    30 s doubled at each attempt up to one hour, then a random value between half of
    that and all of it, so the retries of many deliveries spread out.
    """
    base_s = min(MAX_RETRY_DELAY_S, FIRST_RETRY_DELAY_S * 2 ** max(0, attempt_count - 1))
    return (rng or random).uniform(base_s / 2, base_s)


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run for an endpoint: deliveries sent and when the next one is due."""

    sent: int
    #: The next pending delivery's due time, or None when nothing waits.
    next_due_at: datetime | None
    #: True when the run stopped at MAX_DELIVERIES_PER_TASK with due deliveries left.
    more_due: bool = False


def deliver_endpoint(endpoint_id: uuid.UUID, *, settings, now=utcnow) -> RunResult | None:
    """Send the due deliveries of one endpoint in order; None when another task has its lease.

    `now` returns the current time; tests pass a clock of their own.
    """
    clinic_id = set_clinic_of(WebhookEndpoint, endpoint_id)
    if clinic_id is None:
        logger.info("webhook endpoint %s no longer exists; task dropped", endpoint_id)
        return None
    lease_s = 2 * (settings.webhook_connect_timeout_s + settings.webhook_read_timeout_s) + 30
    token = _claim_endpoint(endpoint_id, lease_s=lease_s, now=now())
    if token is None:
        logger.info("webhook endpoint %s is held by another task; run skipped", endpoint_id)
        return None
    sent = 0
    try:
        while True:
            endpoint = db.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
            if endpoint is None or not endpoint.is_active:
                return RunResult(sent=sent, next_due_at=None)
            delivery = _oldest_pending(endpoint_id)
            if delivery is None:
                return RunResult(sent=sent, next_due_at=None)
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now():
                return RunResult(sent=sent, next_due_at=delivery.next_attempt_at)
            if sent >= MAX_DELIVERIES_PER_TASK:
                return RunResult(sent=sent, next_due_at=now(), more_due=True)
            if not _renew_endpoint(endpoint_id, token, lease_s=lease_s, now=now()):
                logger.warning("webhook endpoint %s: lease lost; run stopped", endpoint_id)
                return None
            _attempt(endpoint, delivery, settings=settings, now=now)
            db.session.commit()
            sent += 1
    finally:
        db.session.rollback()
        _release_endpoint(endpoint_id, token)


def _attempt(endpoint: WebhookEndpoint, delivery: WebhookDelivery, *, settings, now) -> None:
    """Send one delivery once and record the outcome on its row (not committed)."""
    status, error = _send(endpoint, delivery, settings=settings)
    attempted_at = now()
    delivery.attempt_count += 1
    delivery.last_attempt_at = attempted_at
    delivery.last_response_status = status

    if error is None:
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.last_error = None
        delivery.next_attempt_at = None
        delivery.finished_at = attempted_at
        logger.info(
            "webhook delivery %s of event %s to endpoint %s succeeded (attempt %d, HTTP %d)",
            delivery.id,
            delivery.event_id,
            endpoint.id,
            delivery.attempt_count,
            status,
        )
        return

    delivery.last_error = error
    retry_at = attempted_at + timedelta(seconds=retry_delay_s(delivery.attempt_count))
    if retry_at > delivery.created_at + RETRY_WINDOW:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        delivery.finished_at = attempted_at
        logger.warning(
            "webhook delivery %s to endpoint %s failed for good after %d attempts: %s (HTTP %s)",
            delivery.id,
            endpoint.id,
            delivery.attempt_count,
            error,
            status if status is not None else "-",
        )
        return

    delivery.next_attempt_at = retry_at
    logger.warning(
        "webhook delivery %s to endpoint %s failed (attempt %d: %s, HTTP %s); retry at %s",
        delivery.id,
        endpoint.id,
        delivery.attempt_count,
        error,
        status if status is not None else "-",
        retry_at.isoformat(),
    )


def _send(endpoint: WebhookEndpoint, delivery: WebhookDelivery, *, settings):
    """POST the delivery once; return (HTTP status or None, error code or None)."""
    try:
        secret = signing.decrypt_secret(endpoint.secret_encrypted, secret_key=settings.secret_key)
    except signing.SecretUnreadable:
        logger.error("webhook endpoint %s: secret cannot be decrypted", endpoint.id)
        return None, SECRET_UNREADABLE
    try:
        # Checked again at every attempt: the name may resolve elsewhere since registration.
        target = guard.resolve_target(
            endpoint.url, allow_loopback_http=settings.webhook_allow_loopback_http
        )
    except guard.UrlRejected as rejection:
        return None, rejection.code
    body = delivery.payload.encode()
    headers = signing.signed_headers(
        secret, event_id=str(delivery.event_id), timestamp=int(time.time()), body=body
    )
    result = transport.post(
        target,
        body,
        headers,
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
    )
    if result.error is not None:
        return None, result.error
    if 200 <= result.status < 300:
        return result.status, None
    if 300 <= result.status < 400:
        return result.status, REDIRECT_NOT_FOLLOWED
    return result.status, HTTP_STATUS


def _oldest_pending(endpoint_id: uuid.UUID) -> WebhookDelivery | None:
    return db.session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        .limit(1)
        .execution_options(populate_existing=True)
    ).first()


def _claim_endpoint(endpoint_id: uuid.UUID, *, lease_s: float, now: datetime) -> str | None:
    token = new_lease_token()
    result = db.session.execute(
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == endpoint_id,
            or_(
                WebhookEndpoint.lease_owner.is_(None),
                WebhookEndpoint.lease_expires_at.is_(None),
                WebhookEndpoint.lease_expires_at < now,
            ),
        )
        .values(lease_owner=token, lease_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return token if result.rowcount == 1 else None


def _renew_endpoint(endpoint_id: uuid.UUID, token: str, *, lease_s: float, now: datetime) -> bool:
    result = db.session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == token)
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def _release_endpoint(endpoint_id: uuid.UUID, token: str) -> None:
    db.session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == token)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def find_lost_endpoints(huey, *, grace_s: float, now: datetime | None = None) -> list[uuid.UUID]:
    """Return active endpoints with a delivery due for `grace_s` and no task or live lease.

    The sweeper queues a task for each, so a lost task (killed worker, flushed queue)
    delays a delivery but does not lose it. It reads across clinics.
    """
    now = now or utcnow()
    queued = queued_task_ids(huey, "endpoint_id")
    with all_clinics():
        rows = db.session.execute(
            select(WebhookEndpoint.id)
            .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
            .where(
                WebhookEndpoint.is_active.is_(True),
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at < now - timedelta(seconds=grace_s),
                or_(
                    WebhookEndpoint.lease_owner.is_(None),
                    and_(
                        WebhookEndpoint.lease_expires_at.is_not(None),
                        WebhookEndpoint.lease_expires_at < now,
                    ),
                ),
            )
            .distinct()
        ).all()
        db.session.rollback()
    return [row.id for row in rows if str(row.id) not in queued]
