"""Filtered, paged reads of a clinic's audit events, shared by the admin page and the API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select

from portal.audit.models import AuditEvent
from portal.errors import UserFacingError
from portal.extensions import db
from portal.tenancy import scoped

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Rows fetched per round trip while a CSV export streams.
EXPORT_BATCH_SIZE = 500
_ACTION_PATTERN = re.compile(r"^[a-z_]+\.[a-z_]+$")


class InvalidAuditFilter(UserFacingError):
    code = "invalid_filter"
    status = 400
    title = _l("Invalid filter")
    message = _l("The filter %(name)s is invalid: %(expected)s")

    def problem_fields(self) -> dict:
        """Name the field as the API's validation errors do, in the `errors` list."""
        return {
            "errors": [
                {
                    "field": self.params["name"],
                    "location": "query",
                    "code": "invalid_value",
                    "message": str(self.params["expected"]),
                }
            ]
        }


@dataclass(frozen=True)
class EventFilters:
    """The criteria of an event listing; None leaves a field unfiltered."""

    #: A user's or API key's UUID.
    actor_id: str | None = None
    action: str | None = None
    study_id: str | None = None
    #: First day of the period, in the portal's time zone.
    start_date: date | None = None
    #: Last day of the period (included), in the portal's time zone.
    end_date: date | None = None

    def as_query_args(self) -> dict:
        """Return the filters as the query parameters that `parse_filters` reads."""
        args = {
            "person": self.actor_id,
            "action": self.action,
            "study": self.study_id,
            "from": self.start_date.isoformat() if self.start_date else None,
            "to": self.end_date.isoformat() if self.end_date else None,
        }
        return {name: value for name, value in args.items() if value}


def _uuid_arg(args: Mapping, name: str) -> str | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidAuditFilter(name=name, expected=_("expected a UUID.")) from None


def _date_arg(args: Mapping, name: str) -> date | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidAuditFilter(name=name, expected=_("expected a date as YYYY-MM-DD.")) from None


def parse_filters(args: Mapping) -> EventFilters:
    """Read `person`, `action`, `study`, `from` and `to` from query parameters.

    Raises InvalidAuditFilter naming the first parameter that is not valid.
    """
    action = (args.get("action") or "").strip() or None
    if action is not None and not _ACTION_PATTERN.match(action):
        raise InvalidAuditFilter(
            name="action", expected=_("expected an action name such as study.viewed.")
        )
    filters = EventFilters(
        actor_id=_uuid_arg(args, "person"),
        action=action,
        study_id=_uuid_arg(args, "study"),
        start_date=_date_arg(args, "from"),
        end_date=_date_arg(args, "to"),
    )
    if filters.start_date and filters.end_date and filters.start_date > filters.end_date:
        raise InvalidAuditFilter(name="to", expected=_("the period ends before it starts."))
    return filters


def _day_start_utc(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def filtered_query(clinic_id: uuid.UUID, filters: EventFilters, *, timezone: str) -> Select:
    """Build the query of the clinic's events that match `filters`, newest first."""
    query = scoped(AuditEvent, clinic_id)
    if filters.actor_id:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.study_id:
        query = query.where(
            AuditEvent.target_type == "study", AuditEvent.target_id == filters.study_id
        )
    if filters.start_date:
        query = query.where(AuditEvent.occurred_at >= _day_start_utc(filters.start_date, timezone))
    if filters.end_date:
        next_day = filters.end_date + timedelta(days=1)
        query = query.where(AuditEvent.occurred_at < _day_start_utc(next_day, timezone))
    return query.order_by(AuditEvent.seq.desc())


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    #: Pass as `before` to get the next (older) page; None on the last page.
    next_before: int | None


def parse_before(value: str | None, *, name: str = "before") -> int | None:
    """Read a paging cursor (query parameter `name`): a positive sequence number."""
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidAuditFilter(name=name, expected=_("expected a positive number."))
    return int(value)


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise InvalidAuditFilter(
            name="limit", expected=_("expected a number from 1 to %(max)s.", max=MAX_PAGE_SIZE)
        )
    return int(value)


def page_of_events(
    clinic_id: uuid.UUID,
    filters: EventFilters,
    *,
    timezone: str,
    before: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> EventPage:
    """Return up to `limit` matching events with a sequence number below `before`.

    Paging by sequence number (keyset paging) stays correct while new events arrive,
    which an offset would not.
    """
    query = filtered_query(clinic_id, filters, timezone=timezone)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = list(db.session.scalars(query.limit(limit + 1)))
    has_more = len(rows) > limit
    events = rows[:limit]
    return EventPage(events, events[-1].seq if has_more and events else None)


def iterate_events(clinic_id: uuid.UUID, filters: EventFilters, *, timezone: str) -> Iterator:
    """Yield every matching event, newest first, fetching them in batches."""
    query = filtered_query(clinic_id, filters, timezone=timezone).execution_options(
        yield_per=EXPORT_BATCH_SIZE
    )
    with db.session.execute(query).scalars() as result:
        yield from result
