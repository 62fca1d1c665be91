"""Pages of a clinic's studies, newest first, with filters and an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, or_, select

from portal.clinics.models import Clinic
from portal.errors import UserFacingError
from portal.extensions import db
from portal.studies.models import Attempt, Study, StudyStatus
from portal.tenancy import scoped


class InvalidCursor(UserFacingError):
    code = "invalid_cursor"
    status = 400
    title = _l("Invalid cursor")
    message = _l("The cursor is not one the API returned. Start again from the first page.")


@dataclass(frozen=True)
class PageCursor:
    """The position after the last study of a page: its creation time and id."""

    created_at: datetime
    study_id: uuid.UUID

    def encode(self) -> str:
        """Return the cursor as URL-safe text; clients treat it as opaque."""
        payload = json.dumps({"c": self.created_at.isoformat(), "i": self.study_id.hex})
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        """Parse a cursor made by `encode`; raise InvalidCursor for anything else."""
        try:
            padded = text + "=" * (-len(text) % 4)
            payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            created_at = datetime.fromisoformat(payload["c"])
            study_id = uuid.UUID(hex=payload["i"])
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeEncodeError):
            raise InvalidCursor() from None
        if created_at.tzinfo is None:
            raise InvalidCursor()
        return cls(created_at, study_id)


@dataclass(frozen=True)
class StudyFilter:
    """Filters of a study listing. An empty field does not filter."""

    statuses: tuple[StudyStatus, ...] = ()
    #: Inclusive lower bound of the upload time.
    created_after: datetime | None = None
    #: Exclusive upper bound of the upload time.
    created_before: datetime | None = None


@dataclass(frozen=True)
class StudyPage:
    studies: list[Study]
    #: Position where the next page starts, or None on the last page.
    next_cursor: PageCursor | None


def list_studies_page(
    clinic: Clinic, *, limit: int, cursor: PageCursor | None, filters: StudyFilter
) -> StudyPage:
    """Return up to `limit` of the clinic's studies that are not deleted, newest first.

    A study's status is its latest attempt's, so the status filter joins that attempt.
    Studies with the same creation time are ordered by id, so no study is skipped or
    repeated between pages.
    """
    query = scoped(Study, clinic.id).where(Study.deleted_at.is_(None))
    if filters.statuses:
        latest_number = (
            select(func.max(Attempt.number))
            .where(Attempt.study_id == Study.id)
            .correlate(Study)
            .scalar_subquery()
        )
        query = query.join(
            Attempt, and_(Attempt.study_id == Study.id, Attempt.number == latest_number)
        ).where(Attempt.status.in_(filters.statuses))
    if filters.created_after is not None:
        query = query.where(Study.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Study.created_at < filters.created_before)
    if cursor is not None:
        query = query.where(
            or_(
                Study.created_at < cursor.created_at,
                and_(Study.created_at == cursor.created_at, Study.id < cursor.study_id),
            )
        )
    query = query.order_by(Study.created_at.desc(), Study.id.desc()).limit(limit + 1)
    studies = list(db.session.scalars(query))
    if len(studies) <= limit:
        return StudyPage(studies, None)
    last = studies[limit - 1]
    return StudyPage(studies[:limit], PageCursor(last.created_at, last.id))
