"""Tenant scoping: the one query helper, and the clinic PostgreSQL row-level security sees.

Every query of a tenant table (one with a `clinic_id` column) goes through `scoped`. On
PostgreSQL the tables also carry a row-level security policy that compares `clinic_id`
with the setting `app.clinic_id` of the current transaction, so a query that forgets the
scope still returns no row of another clinic. The setting is kept in the session's
`info` and written at the start of every transaction, so it survives commits within a
request or a task. On PostgreSQL, with no clinic set, tenant tables look empty.

`all_clinics()` lifts the policy for the few lookups that must cross clinics before the
clinic is known: a signed-in user's memberships, an API key by its id, an invitation by
its token, the attempt a task was given, and the operator's commands. The policy guards
against queries that forget their scope; it does not guard against SQL injection, since
the application's role may set any value.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

from sqlalchemy import Select, event, select, text
from sqlalchemy.orm import Session

from portal.extensions import db

logger = logging.getLogger(__name__)

#: The PostgreSQL setting the row-level security policies read.
CLINIC_SETTING = "app.clinic_id"
#: The setting's value that lets a transaction see every clinic's rows.
ALL_CLINICS = "*"
_SESSION_INFO_KEY = "portal_clinic_scope"
_SET_CLINIC_SQL = text("SELECT set_config('app.clinic_id', :value, true)")


def scoped(model, clinic_id: uuid.UUID) -> Select:
    """Build `SELECT model WHERE model.clinic_id = clinic_id`: every tenant query starts here."""
    column = getattr(model, "clinic_id", None)
    if column is None:
        raise TypeError(f"{model.__name__} has no clinic_id column, so it is not a tenant table")
    if clinic_id is None:
        raise ValueError(f"a query of {model.__name__} needs a clinic id")
    return select(model).where(column == clinic_id)


def current_clinic_scope() -> str:
    """Return the scope of this session: a clinic id, `ALL_CLINICS`, or "" for none."""
    return db.session.info.get(_SESSION_INFO_KEY, "")


def set_current_clinic(clinic_id: uuid.UUID | None) -> None:
    """Make the session's transactions, this one and later ones, see only `clinic_id`'s rows.

    The web app calls it once the request's clinic is known; each task calls it after
    loading the row it was given and before touching any other row.
    """
    _set_scope(str(clinic_id) if clinic_id else "")


@contextlib.contextmanager
def all_clinics() -> Iterator[None]:
    """Let the queries inside the block see every clinic's rows, then restore the scope."""
    previous = current_clinic_scope()
    _set_scope(ALL_CLINICS)
    try:
        yield
    finally:
        _set_scope(previous)


def set_clinic_of(model, row_id: uuid.UUID) -> uuid.UUID | None:
    """Set the current clinic to the one `row_id` of `model` belongs to; return its id.

    Tasks receive only a row id; this looks up the row's clinic across clinics and
    then narrows the session to it. Returns None (and sets no clinic) when the row is
    missing.
    """
    with all_clinics():
        clinic_id = db.session.scalar(select(model.clinic_id).where(model.id == row_id))
    set_current_clinic(clinic_id)
    return clinic_id


def set_connection_scope(connection, value: str) -> None:
    """Name the clinic (or ALL_CLINICS) for a transaction on a connection of its own.

    Threads that write outside the request or task session (lease renewal) call it at the
    start of each transaction; on SQLite it does nothing.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(_SET_CLINIC_SQL, {"value": value or ""})


def _set_scope(value: str) -> None:
    session = db.session()
    session.info[_SESSION_INFO_KEY] = value
    if session.in_transaction() and _is_postgresql(session):
        session.execute(_SET_CLINIC_SQL, {"value": value})


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@event.listens_for(Session, "after_begin")
def _apply_scope_to_transaction(session: Session, transaction, connection) -> None:
    # The setting is local to the transaction, so a pooled connection never carries one
    # request's clinic into the next; it is written again at each transaction's start.
    if connection.dialect.name != "postgresql":
        return
    connection.execute(_SET_CLINIC_SQL, {"value": session.info.get(_SESSION_INFO_KEY, "")})
