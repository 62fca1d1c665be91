"""A circuit breaker kept in the database, so every worker process shares its state.

Closed: calls go through and consecutive failures are counted. Open: after
`failure_threshold` consecutive failures no call goes through until `retry_at`. Half-open:
after `retry_at` exactly one worker wins a compare-and-set and sends a probe call; its
success closes the breaker and its failure opens it for another cooldown. A probe whose
worker died is taken over once `probe_expires_at` passes.

Each function commits on a connection of its own, so the state is visible to other
workers at once and the caller's session is left alone.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Float, Integer, String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from portal.db_types import UTCDateTime, string_enum, utcnow
from portal.extensions import db

logger = logging.getLogger(__name__)

INFERENCE_BREAKER = "inference_api"


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreakerRecord(db.Model):
    """The shared state of one circuit breaker."""

    __tablename__ = "circuit_breaker"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[BreakerState] = mapped_column(
        string_enum(BreakerState, length=16), default=BreakerState.CLOSED
    )
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    #: Seconds the breaker stays open after its latest opening.
    cooldown_s: Mapped[float] = mapped_column(Float, default=0.0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When an open breaker lets one probe call through.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    probe_owner: Mapped[str | None] = mapped_column(String(128))
    probe_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


@dataclass(frozen=True)
class BreakerDecision:
    """Whether a call may go now; `retry_after_s` says when to ask again if not."""

    allowed: bool
    is_probe: bool = False
    retry_after_s: float = 0.0


class CircuitBreaker:
    """Operations on the breaker named `name`; the caller gives the thresholds."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cooldown_s: float,
        probe_timeout_s: float = 300.0,
    ):
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s

    def _ensure_row(self, connection) -> None:
        table = CircuitBreakerRecord.__table__
        exists = connection.execute(select(table.c.name).where(table.c.name == self.name))
        if exists.first() is None:
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(table).values(
                            name=self.name,
                            state=BreakerState.CLOSED,
                            consecutive_failures=0,
                            cooldown_s=0.0,
                            updated_at=utcnow(),
                        )
                    )
            except IntegrityError:
                pass  # Another worker inserted it first.

    def state(self) -> CircuitBreakerRecord | None:
        """Return a detached copy of the breaker's row, or None before its first use."""
        with db.engine.connect() as connection:
            row = connection.execute(
                select(CircuitBreakerRecord.__table__).where(
                    CircuitBreakerRecord.__table__.c.name == self.name
                )
            ).first()
        if row is None:
            return None
        return CircuitBreakerRecord(**row._asdict())

    def is_open(self) -> bool:
        record = self.state()
        return record is not None and record.state != BreakerState.CLOSED

    def before_call(self, owner: str) -> BreakerDecision:
        """Decide whether `owner` may call the service now."""
        table = CircuitBreakerRecord.__table__
        now = utcnow()
        with db.engine.begin() as connection:
            self._ensure_row(connection)
            row = connection.execute(select(table).where(table.c.name == self.name)).one()
            if row.state == BreakerState.CLOSED:
                return BreakerDecision(allowed=True)
            if row.state == BreakerState.OPEN and row.retry_at is not None and now < row.retry_at:
                return BreakerDecision(
                    allowed=False, retry_after_s=(row.retry_at - now).total_seconds()
                )
            if (
                row.state == BreakerState.HALF_OPEN
                and row.probe_expires_at is not None
                and now < row.probe_expires_at
            ):
                return BreakerDecision(allowed=False, retry_after_s=min(self.cooldown_s, 5.0))
            # Open past retry_at, or half-open with an abandoned probe: try to own the probe.
            taken = connection.execute(
                update(table)
                .where(
                    table.c.name == self.name,
                    table.c.state == row.state,
                    table.c.updated_at == row.updated_at,
                )
                .values(
                    state=BreakerState.HALF_OPEN,
                    probe_owner=owner,
                    probe_expires_at=now + timedelta(seconds=self.probe_timeout_s),
                    updated_at=now,
                )
            )
        if taken.rowcount == 1:
            logger.info("circuit breaker %s half-open: %s sends the probe", self.name, owner)
            return BreakerDecision(allowed=True, is_probe=True)
        return BreakerDecision(allowed=False, retry_after_s=min(self.cooldown_s, 5.0))

    def record_success(self) -> None:
        table = CircuitBreakerRecord.__table__
        with db.engine.begin() as connection:
            self._ensure_row(connection)
            closed = connection.execute(
                update(table)
                .where(table.c.name == self.name, table.c.state != BreakerState.CLOSED)
                .values(
                    state=BreakerState.CLOSED,
                    consecutive_failures=0,
                    opened_at=None,
                    retry_at=None,
                    probe_owner=None,
                    probe_expires_at=None,
                    updated_at=utcnow(),
                )
            )
            if closed.rowcount == 0:
                connection.execute(
                    update(table)
                    .where(table.c.name == self.name, table.c.consecutive_failures != 0)
                    .values(consecutive_failures=0, updated_at=utcnow())
                )
        if closed.rowcount:
            logger.info("circuit breaker %s closed", self.name)

    def record_failure(self) -> None:
        """Count a failed call; open the breaker at the threshold or after a failed probe."""
        table = CircuitBreakerRecord.__table__
        now = utcnow()
        with db.engine.begin() as connection:
            self._ensure_row(connection)
            row = connection.execute(
                select(table).where(table.c.name == self.name).with_for_update()
            ).one()
            failures = row.consecutive_failures + 1
            values = {"consecutive_failures": failures, "updated_at": now}
            opens = row.state == BreakerState.HALF_OPEN or (
                row.state == BreakerState.CLOSED and failures >= self.failure_threshold
            )
            if opens:
                values |= {
                    "state": BreakerState.OPEN,
                    "opened_at": now,
                    "cooldown_s": self.cooldown_s,
                    "retry_at": now + timedelta(seconds=self.cooldown_s),
                    "probe_owner": None,
                    "probe_expires_at": None,
                }
            connection.execute(update(table).where(table.c.name == self.name).values(**values))
        if opens:
            logger.warning(
                "circuit breaker %s opened after %d consecutive failures; next probe in %.0f s",
                self.name,
                failures,
                self.cooldown_s,
            )


def inference_breaker(settings) -> CircuitBreaker:
    """Build the breaker in front of the inference API from the settings."""
    return CircuitBreaker(
        INFERENCE_BREAKER,
        failure_threshold=settings.inference_breaker_failures,
        cooldown_s=settings.inference_breaker_cooldown_s,
        probe_timeout_s=settings.inference_api_timeout_s + 60.0,
    )
