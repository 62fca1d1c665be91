"""Browser sessions backed by a database row, with an idle timeout and an absolute lifetime.

Flask's signed cookie contains the user id (Flask-Login) and a random session token. The
token's row decides whether the cookie still signs anyone in, so logout and the removal
of a member take effect at the next request, even for a copied cookie.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import datetime, timedelta

from flask import Flask, current_app, g, request, session
from sqlalchemy import select, update

from portal.auth.models import SignInSession
from portal.db_types import utcnow
from portal.extensions import db

logger = logging.getLogger(__name__)

SESSION_TOKEN_KEY = "sid"
#: `last_seen_at` is written at most this often, so that a page with polling partials does
#: not write to the database on every request. The idle timeout is therefore exact to
#: within this many seconds.
TOUCH_INTERVAL_S = 30
#: Paths whose requests never read the session: the JSON API takes Bearer tokens only.
SESSIONLESS_PREFIXES = ("/api/", "/static/")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user_id: uuid.UUID) -> str:
    """Create a session row for the user and return the token the cookie must carry."""
    token = secrets.token_urlsafe(32)
    record = SignInSession(user_id=user_id, token_sha256=_digest(token))
    db.session.add(record)
    db.session.flush()
    logger.info("started session %s for user %s", record.id, user_id)
    return token


def find_live_session(
    token: str | None,
    *,
    idle_timeout_s: int,
    max_lifetime_s: int,
    now: datetime | None = None,
) -> SignInSession | None:
    """Return the live session of `token`, ending it first if a timeout has passed."""
    if not token:
        return None
    record = db.session.scalar(
        select(SignInSession).where(SignInSession.token_sha256 == _digest(token))
    )
    if record is None or not record.is_live:
        return None
    now = now or utcnow()
    if now - record.created_at > timedelta(seconds=max_lifetime_s):
        _end(record, "max_lifetime", now)
        return None
    if now - record.last_seen_at > timedelta(seconds=idle_timeout_s):
        _end(record, "idle_timeout", now)
        return None
    if now - record.last_seen_at > timedelta(seconds=TOUCH_INTERVAL_S):
        record.last_seen_at = now
    return record


def end_session(token: str | None, *, reason: str) -> None:
    """End the session of `token`, if it is live."""
    if not token:
        return
    record = db.session.scalar(
        select(SignInSession).where(SignInSession.token_sha256 == _digest(token))
    )
    if record is not None and record.is_live:
        _end(record, reason, utcnow())


def end_user_sessions(user_id: uuid.UUID, *, reason: str) -> int:
    """End every live session of a user and return how many were ended."""
    result = db.session.execute(
        update(SignInSession)
        .where(SignInSession.user_id == user_id, SignInSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
    )
    if result.rowcount:
        logger.info("ended %d sessions of user %s (%s)", result.rowcount, user_id, reason)
    return result.rowcount


def _end(record: SignInSession, reason: str, now: datetime) -> None:
    record.ended_at = now
    record.end_reason = reason
    logger.info("session %s of user %s ended: %s", record.id, record.user_id, reason)


def install_session_guard(app: Flask) -> None:
    """Check the server-side session before anything reads `current_user`.

    Register it before other `before_request` hooks that touch `current_user`.
    """

    @app.before_request
    def check_server_session():
        if request.path.startswith(SESSIONLESS_PREFIXES) or "_user_id" not in session:
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        record = find_live_session(
            session.get(SESSION_TOKEN_KEY),
            idle_timeout_s=settings.session_idle_timeout_s,
            max_lifetime_s=settings.session_max_lifetime_s,
        )
        if record is None or str(record.user_id) != session.get("_user_id"):
            # Keep the language choice; everything else belonged to the ended session.
            locale = session.get("locale")
            session.clear()
            if locale:
                session["locale"] = locale
            g.session_ended = True
        db.session.commit()
