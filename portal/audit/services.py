"""Record audit events.

Which transaction an event is written in:

- `record()` writes in the caller's session and transaction (`db.session`). The event
  commits with the action it describes, and an action that is rolled back leaves no
  success event behind. The caller commits as usual; a view that only reads commits
  right after recording its `*.viewed` event.
- A denied or failed event must survive the rollback of its request. The error handler
  therefore rolls back first, then records the denial in a fresh transaction and commits
  it (`record_denied_request`). The sign-in callback records a failed sign-in and commits
  it before it returns its error page, on a session that wrote nothing else.

Recording locks the chain's head row (`UPDATE ... SET seq = seq`), which on PostgreSQL
is a row lock and on SQLite takes the database's write lock. The lock is held until the
caller's transaction ends, so two transactions of one clinic append one after the other
and the chain never forks. Transactions of different clinics do not wait for each other.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from flask import g, has_request_context, request
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from portal.audit.chain import event_hash
from portal.audit.details import clean_details
from portal.audit.models import (
    GENESIS_HASH,
    ActorType,
    AuditChainHead,
    AuditEvent,
    Outcome,
    chain_name,
)
from portal.db_types import utcnow
from portal.extensions import db
from portal.tenancy import all_clinics

logger = logging.getLogger(__name__)

USER_AGENT_MAX_LENGTH = 300


@dataclass(frozen=True)
class AuditActor:
    """The actor of an event: a user, an API key, the system (tasks, CLI) or an anonymous caller."""

    type: ActorType
    id: str | None = None
    #: The actor's role in the event's clinic (`admin`, `doctor`), when it has one.
    role: str | None = None

    @classmethod
    def for_user(cls, user, *, role=None) -> AuditActor:
        return cls(ActorType.USER, str(user.id), str(role) if role else None)

    @classmethod
    def for_api_key(cls, api_key, *, role=None) -> AuditActor:
        return cls(ActorType.API_KEY, str(api_key.id), str(role) if role else None)


SYSTEM = AuditActor(ActorType.SYSTEM)
ANONYMOUS = AuditActor(ActorType.ANONYMOUS)


def actor_from_request() -> AuditActor:
    """Return the caller of the current request, or SYSTEM outside a request.

    An API request's principal wins over the browser session, since the API ignores
    cookies. A page's role comes from the membership of the clinic the page acts in.
    """
    if not has_request_context():
        return SYSTEM
    principal = g.get("principal")
    if principal is not None:
        if principal.api_key is not None:
            return AuditActor.for_api_key(principal.api_key, role=principal.role)
        return AuditActor.for_user(principal.user, role=principal.role)
    if request.path.startswith("/api/"):
        return ANONYMOUS
    from flask_login import current_user

    if current_user.is_authenticated:
        membership = g.get("membership")
        return AuditActor.for_user(current_user, role=membership.role if membership else None)
    return ANONYMOUS


def _request_clinic_id() -> uuid.UUID | None:
    if not has_request_context():
        return None
    clinic = g.get("clinic")
    return clinic.id if clinic is not None else None


def _request_facts() -> dict:
    if not has_request_context():
        return {"ip": None, "user_agent": None, "request_id": None}
    user_agent = request.user_agent.string or None
    return {
        "ip": (request.remote_addr or "")[:45] or None,
        "user_agent": user_agent[:USER_AGENT_MAX_LENGTH] if user_agent else None,
        "request_id": g.get("request_id"),
    }


def record(
    action: str,
    *,
    target_type: str | None = None,
    target_id=None,
    outcome: Outcome | str = Outcome.SUCCESS,
    details: dict | None = None,
    clinic_id: uuid.UUID | None = None,
    actor: AuditActor | None = None,
) -> AuditEvent:
    """Append an event to its clinic's chain in the caller's transaction and return it.

    `clinic_id` defaults to the clinic of the current request (`g.clinic`); with none,
    the event goes to the platform chain. `actor` defaults to the request's caller, or
    SYSTEM outside a request. IP address, user agent and request id come from the request.
    `details` pass through `clean_details`, which drops anything that could be patient
    data or a secret. The caller commits.
    """
    if clinic_id is None:
        clinic_id = _request_clinic_id()
    actor = actor or actor_from_request()
    chain = chain_name(clinic_id)
    with all_clinics():
        seq, prev_hash = _lock_chain_head(chain, clinic_id)
        fields = {
            "id": uuid.uuid4(),
            "chain": chain,
            "seq": seq + 1,
            "occurred_at": utcnow(),
            "clinic_id": clinic_id,
            "actor_type": ActorType(actor.type),
            "actor_id": actor.id,
            "actor_role": actor.role,
            "action": action,
            "target_type": target_type,
            "target_id": str(target_id)[:64] if target_id is not None else None,
            "outcome": Outcome(outcome),
            **_request_facts(),
            "details": clean_details(details, action=action),
            "prev_hash": prev_hash,
        }
        event = AuditEvent(**fields, hash=event_hash(fields))
        db.session.add(event)
        db.session.flush()
        db.session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == chain)
            .values(seq=event.seq, hash=event.hash, updated_at=event.occurred_at)
            .execution_options(synchronize_session=False)
        )
    return event


def _lock_chain_head(chain: str, clinic_id: uuid.UUID | None) -> tuple[int, str]:
    """Lock the chain's head row until the transaction ends and return its seq and hash.

    The head row is created on a chain's first event. Two transactions creating it at
    once both insert with ON CONFLICT DO NOTHING, and the later one then waits on the
    lock like any other.
    """
    for _ in range(2):
        locked = db.session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == chain)
            .values(seq=AuditChainHead.seq)
            .execution_options(synchronize_session=False)
        ).rowcount
        if locked:
            head = db.session.execute(
                select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.chain == chain)
            ).one()
            return head.seq, head.hash
        dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
        db.session.execute(
            dialect.insert(AuditChainHead)
            .values(chain=chain, clinic_id=clinic_id, seq=0, hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=["chain"])
        )
    raise RuntimeError(f"audit chain head {chain} could not be locked")


def record_view(action: str, *, target_type: str, target_id, details: dict | None = None) -> None:
    """Record that the request's caller viewed something, and commit.

    Views that only read call it, because their transaction contains nothing else to commit.
    """
    record(action, target_type=target_type, target_id=target_id, details=details)
    db.session.commit()


def record_in_user_clinics(action: str, *, user, outcome: Outcome | str = Outcome.SUCCESS) -> None:
    """Record one event in each clinic where `user` is an active member, with their role there.

    A user with no active membership gets one event in the platform chain, so that a
    sign-in of someone who belongs nowhere still leaves a trace. The caller commits.
    """
    from portal.clinics.members import active_memberships_of

    memberships = active_memberships_of(user)
    if not memberships:
        record(action, outcome=outcome, actor=AuditActor.for_user(user))
        return
    # A fixed order of clinics keeps two such calls from locking chain heads in opposite
    # orders, which PostgreSQL would end as a deadlock.
    for membership in sorted(memberships, key=lambda item: str(item.clinic_id)):
        record(
            action,
            outcome=outcome,
            clinic_id=membership.clinic_id,
            actor=AuditActor.for_user(user, role=membership.role),
        )


#: View arguments that name a resource by a UUID or a public hex id, and the target
#: type they name. Other arguments (an invitation's token, for one) are never recorded.
_TARGET_ARGUMENTS = {
    "study_id": "study",
    "membership_id": "membership",
    "invitation_id": "invitation",
    "clinic_id": "clinic",
    "key_id": "api_key",
}
_HEX_ID = re.compile(r"^[0-9a-fA-F-]{8,36}$")


def _denied_target() -> tuple[str | None, str | None]:
    for argument, target_type in _TARGET_ARGUMENTS.items():
        value = (request.view_args or {}).get(argument)
        if value is not None and _HEX_ID.match(str(value)):
            return target_type, str(value)
    return None, None


def record_denied_request(*, status: int, code: str) -> None:
    """Record that the current request was refused (401, 403 or 404) and commit it.

    Called by the error handler after it rolled the request's transaction back. The
    event goes to the caller's clinic when one is known, so a doctor of clinic A who
    requests clinic B's study leaves the event in clinic A's trail. An unauthenticated
    call goes to the platform chain. A database error here is logged, not raised, so
    that the caller still gets its 4xx response.
    """
    # Rejected API credentials past RATE_LIMIT_API_UNAUTHENTICATED get a 429 before this,
    # so a client retrying with a wrong key writes a bounded number of events.
    target_type, target_id = _denied_target()
    try:
        record(
            "access.denied",
            outcome=Outcome.DENIED,
            target_type=target_type,
            target_id=target_id,
            details={
                "status": status,
                "code": code,
                "endpoint": request.endpoint,
                "method": request.method,
            },
        )
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        logger.exception("audit event access.denied (status %d) could not be recorded", status)
