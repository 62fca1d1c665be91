"""Server-side records of browser sessions."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db_types import UTCDateTime, new_uuid, utcnow
from portal.extensions import db


class SignInSession(db.Model):
    """One browser sign-in; the cookie carries a random token whose digest is stored here.

    Ending the row (logout, member removal, timeouts) ends the session on the next request,
    whatever copy of the cookie a browser still holds.
    """

    __tablename__ = "sign_in_session"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user_account.id"), index=True)
    #: SHA-256 of the token in the cookie, so a database copy does not yield usable cookies.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why the session ended: logout, idle_timeout, max_lifetime or membership_removed.
    end_reason: Mapped[str | None] = mapped_column(String(30))

    @property
    def is_live(self) -> bool:
        return self.ended_at is None
