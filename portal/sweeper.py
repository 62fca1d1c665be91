"""The sweeper: queue again every attempt that has no worker and no task in the queue.

Huey hands a task to one worker at most once, and a task is lost with a killed worker or
a flushed Redis. The database is the source of truth, so the sweeper compares it with
the queue: a non-terminal attempt whose lease expired, or that waits with no queued or
scheduled task, gets its step queued again. A step that runs twice finds the attempt
held or already past it and returns, so a duplicate costs one compare-and-set.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from datetime import timedelta

from flask import Flask
from sqlalchemy import select, update

from portal.db_types import utcnow
from portal.extensions import db
from portal.studies.models import TERMINAL_STATUSES, Attempt, Study
from portal.tenancy import all_clinics

logger = logging.getLogger(__name__)


def queued_task_ids(huey, argument: str) -> set[str]:
    """Return the keyword argument `argument` of every pending or scheduled task in the queue.

    A message that does not deserialize (signed with another SECRET_KEY, or damaged) is
    skipped: the consumer drops it when it reaches it, and it must not stop the sweep.
    """
    ids = set()
    messages = itertools.chain(huey.storage.enqueued_items(), huey.storage.scheduled_items())
    skipped = 0
    for message in messages:
        try:
            task = huey.deserialize_task(message)
        except Exception:
            skipped += 1
            continue
        value = (task.kwargs or {}).get(argument)
        if value:
            ids.add(str(value))
    if skipped:
        logger.warning("sweeper skipped %d queued messages it could not read", skipped)
    return ids


def queued_attempt_ids(huey) -> set[str]:
    """Return the attempt ids of every pending or scheduled task in the queue."""
    return queued_task_ids(huey, "attempt_id")


def sweep(huey, *, grace_s: float) -> list[uuid.UUID]:
    """Queue the step of each lost attempt of every clinic and return their ids.

    Also queues the webhook endpoints whose due deliveries lost their task. The sweeper
    handles ids and statuses only, so it reads across clinics.
    """
    with all_clinics():
        requeued = _sweep(huey, grace_s=grace_s)
    _sweep_webhooks(huey, grace_s=grace_s)
    return requeued


def _sweep_webhooks(huey, *, grace_s: float) -> None:
    """Queue a delivery run for each endpoint whose due deliveries have no task."""
    from portal.tasks import queue_webhook_deliveries
    from portal.webhooks.delivery import find_lost_endpoints

    lost = find_lost_endpoints(huey, grace_s=grace_s)
    for endpoint_id in lost:
        logger.warning("webhook endpoint %s has due deliveries and no task; queued", endpoint_id)
    queue_webhook_deliveries(lost)


def _sweep(huey, *, grace_s: float) -> list[uuid.UUID]:
    """Queue the step of each lost attempt and return their ids; the caller's app is used.

    `grace_s` leaves alone attempts that changed within that many seconds, so a task
    taken from the queue a moment ago has time to claim its attempt.
    """
    from portal.tasks import queue_step_for_status

    now = utcnow()
    queued = queued_attempt_ids(huey)
    rows = db.session.execute(
        select(
            Attempt.id,
            Attempt.status,
            Attempt.lease_owner,
            Attempt.lease_expires_at,
            Attempt.updated_at,
        )
        .join(Study, Study.id == Attempt.study_id)
        .where(
            Attempt.status.not_in(TERMINAL_STATUSES),
            Study.deleted_at.is_(None),
            Attempt.updated_at < now - timedelta(seconds=grace_s),
        )
    ).all()
    db.session.rollback()
    requeued = []
    for row in rows:
        lease_is_live = row.lease_owner is not None and (
            row.lease_expires_at is not None and row.lease_expires_at > now
        )
        if lease_is_live or str(row.id) in queued:
            continue
        # Several workers sweep; the one whose compare-and-set wins queues the step.
        won = db.session.execute(
            update(Attempt)
            .where(Attempt.id == row.id, Attempt.updated_at == row.updated_at)
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        if won.rowcount != 1:
            continue
        queue_step_for_status(str(row.id), row.status)
        requeued.append(row.id)
        logger.warning(
            "attempt %s found in %s with %s; step queued again",
            row.id,
            row.status,
            "an expired lease" if row.lease_owner else "no queued task",
        )
    return requeued


class SweeperThread(threading.Thread):
    """Run `sweep` every `interval_s` seconds in the worker's main process."""

    def __init__(self, app: Flask, huey, *, interval_s: float):
        super().__init__(name="sweeper", daemon=True)
        self.app = app
        self.huey = huey
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        grace_s = max(2 * self.interval_s, 2.0)
        while not self.stopped.wait(self.interval_s):
            try:
                with self.app.app_context():
                    sweep(self.huey, grace_s=grace_s)
            except Exception:  # noqa: BLE001 - the next round tries again
                logger.exception("sweep failed")

    def stop(self) -> None:
        self.stopped.set()
