"""Leases: how one worker step holds an attempt, renews its hold and lets go.

A step claims its attempt with a compare-and-set on the status and the lease columns. It
gets a token that no other claim shares. Every later write of the step is guarded by
that token and the step's working status, so a step whose lease expired, or whose study
was cancelled, cannot write over what another worker or the user did.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine

from portal.db_types import utcnow
from portal.extensions import db
from portal.studies.models import STATUS_PROGRESS, TRANSITIONS, Attempt, StudyStatus
from portal.tenancy import current_clinic_scope, set_connection_scope
from portal.webhooks.services import record_study_event

logger = logging.getLogger(__name__)

WORKER_NAME = f"{os.uname().nodename}:{os.getpid()}"


class LeaseLost(Exception):
    """The attempt is no longer held by this step: cancelled, failed or taken over."""


@dataclass(frozen=True)
class Step:
    """A task's place in the state machine: it starts at `entry` and works in `working`."""

    name: str
    entry: StudyStatus
    working: StudyStatus


CONVERT = Step("convert", StudyStatus.UPLOADED, StudyStatus.CONVERTING)
INFER = Step("infer", StudyStatus.INFERENCE_QUEUED, StudyStatus.INFERENCE_RUNNING)
WRITE_RESULTS = Step("write_results", StudyStatus.WRITING_RESULTS, StudyStatus.WRITING_RESULTS)

#: The step that continues an attempt found in each non-terminal status.
STEP_FOR_STATUS = {
    StudyStatus.UPLOADED: CONVERT,
    StudyStatus.CONVERTING: CONVERT,
    StudyStatus.INFERENCE_QUEUED: INFER,
    StudyStatus.INFERENCE_RUNNING: INFER,
    StudyStatus.WRITING_RESULTS: WRITE_RESULTS,
}


def new_lease_token() -> str:
    # The worker name helps reading the database; the random part makes the token unique.
    return f"{WORKER_NAME}:{uuid.uuid4().hex[:12]}"[-128:]


@dataclass
class Lease:
    """One step's hold on one attempt, renewed by a background thread until released."""

    attempt_id: uuid.UUID
    token: str
    step: Step
    duration_s: float
    recovered: bool
    #: The clinic whose rows the renewal thread may see under row-level security.
    clinic_id: str = ""
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _guard(self):
        return and_(
            Attempt.id == self.attempt_id,
            Attempt.lease_owner == self.token,
            Attempt.status == self.step.working,
        )

    def check(self) -> None:
        """Raise LeaseLost when the renewal thread found that the attempt moved on."""
        if self.lost.is_set():
            raise LeaseLost(str(self.attempt_id))

    def verify(self) -> None:
        """Read the attempt and raise LeaseLost unless this step still holds it.

        Cheaper than waiting for the renewal thread, so a cancel stops a long wait soon.
        """
        self.check()
        held = db.session.execute(select(Attempt.id).where(self._guard())).first()
        db.session.commit()
        if held is None:
            self.lost.set()
            raise LeaseLost(str(self.attempt_id))

    def update(self, **values) -> None:
        """Write `values` to the attempt if this step still owns the lease, and commit."""
        self.check()
        result = db.session.execute(
            update(Attempt)
            .where(self._guard())
            .values(**values, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.session.rollback()
            self.lost.set()
            raise LeaseLost(str(self.attempt_id))
        db.session.commit()

    def finish(self, target: StudyStatus, **values) -> None:
        """Move the attempt to `target` and release it, in the session's open transaction.

        The caller's pending changes (artifacts, study fields) commit together with the
        move, or not at all when the lease was lost.
        """
        if target not in TRANSITIONS[self.step.working] and not target.is_terminal:
            raise ValueError(f"{self.step.working} -> {target} is not allowed")
        now = utcnow()
        values = dict(values, status=target, lease_owner=None, lease_expires_at=None)
        if target in STATUS_PROGRESS:
            values.setdefault("progress", STATUS_PROGRESS[target])
        if target.is_terminal:
            values["finished_at"] = now
        if target == StudyStatus.INFERENCE_QUEUED:
            values.setdefault("queued_at", now)
        result = db.session.execute(
            update(Attempt)
            .where(self._guard())
            .values(**values, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.session.rollback()
            self.lost.set()
            raise LeaseLost(str(self.attempt_id))
        # The webhook deliveries of a terminal status commit with the status itself.
        endpoint_ids = record_study_event(self.attempt_id, target) if target.is_terminal else []
        db.session.commit()
        self.stop_renewing()
        if endpoint_ids:
            from portal.tasks import queue_webhook_deliveries

            queue_webhook_deliveries(endpoint_ids)

    def hand_back(self, *, count_recovery: bool = False) -> bool:
        """Return the attempt to the step's entry status, so any worker can take it again."""
        self.stop_renewing()
        db.session.rollback()
        values = {
            "status": self.step.entry,
            "lease_owner": None,
            "lease_expires_at": None,
            "progress": STATUS_PROGRESS[self.step.entry],
            "updated_at": utcnow(),
        }
        if count_recovery:
            values["recovery_count"] = Attempt.recovery_count + 1
        result = db.session.execute(
            update(Attempt)
            .where(self._guard())
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        if result.rowcount == 1:
            logger.info("attempt %s handed back at %s", self.attempt_id, self.step.entry)
        return result.rowcount == 1

    def start_renewing(self, engine: Engine) -> None:
        self._thread = threading.Thread(
            target=self._renew_until_stopped,
            args=(engine,),
            name=f"lease-{self.attempt_id}",
            daemon=True,
        )
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _renew_until_stopped(self, engine: Engine) -> None:
        interval_s = self.duration_s / 3
        while not self._stop.wait(interval_s):
            try:
                with engine.begin() as connection:
                    # This connection is outside the task's session, so it names the
                    # clinic itself for PostgreSQL row-level security.
                    set_connection_scope(connection, self.clinic_id)
                    result = connection.execute(
                        update(Attempt.__table__)
                        .where(
                            Attempt.__table__.c.id == self.attempt_id,
                            Attempt.__table__.c.lease_owner == self.token,
                            Attempt.__table__.c.status == self.step.working,
                        )
                        .values(lease_expires_at=utcnow() + timedelta(seconds=self.duration_s))
                    )
            except Exception:  # noqa: BLE001 - a database hiccup is retried at the next tick
                logger.warning("lease of attempt %s not renewed", self.attempt_id, exc_info=True)
                continue
            if result.rowcount != 1:
                logger.info("attempt %s moved on; step %s stops", self.attempt_id, self.step.name)
                self.lost.set()
                return


def claim(attempt_id: uuid.UUID, step: Step, *, duration_s: float) -> Lease | None:
    """Take the attempt for `step` with a compare-and-set; None when it is not for us.

    A fresh claim moves the attempt from the step's entry status to its working status.
    A recovery takes over an attempt in the working status whose lease expired (its
    worker died or hung) and counts it in `recovery_count`.
    """
    token = new_lease_token()
    now = utcnow()
    expires_at = now + timedelta(seconds=duration_s)
    taken = {"lease_owner": token, "lease_expires_at": expires_at, "updated_at": now}

    fresh = db.session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.status == step.entry,
            Attempt.lease_owner.is_(None),
        )
        .values(
            status=step.working,
            progress=STATUS_PROGRESS[step.working],
            started_at=func.coalesce(Attempt.started_at, now),
            **taken,
        )
        .execution_options(synchronize_session=False)
    )
    recovered = False
    if fresh.rowcount != 1:
        stale = db.session.execute(
            update(Attempt)
            .where(
                Attempt.id == attempt_id,
                Attempt.status == step.working,
                or_(Attempt.lease_expires_at.is_(None), Attempt.lease_expires_at < now),
            )
            .values(recovery_count=Attempt.recovery_count + 1, **taken)
            .execution_options(synchronize_session=False)
        )
        recovered = stale.rowcount == 1
        if not recovered:
            db.session.commit()
            logger.info("attempt %s not claimable for %s; step skipped", attempt_id, step.name)
            return None
    db.session.commit()
    lease = Lease(attempt_id, token, step, duration_s, recovered, clinic_id=current_clinic_scope())
    lease.start_renewing(db.engine)
    logger.info(
        "attempt %s claimed for %s%s", attempt_id, step.name, " (recovered)" if recovered else ""
    )
    return lease
