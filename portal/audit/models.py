"""Audit events and the head of each hash chain."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db_types import UTCDateTime, new_uuid, string_enum
from portal.extensions import db

#: Chain name of the events that belong to no clinic (a failed sign-in, an unauthenticated
#: API call). Clinic chains are named by the clinic's UUID.
PLATFORM_CHAIN = "platform"
#: `prev_hash` of the first event of every chain.
GENESIS_HASH = "0" * 64


class ActorType(enum.StrEnum):
    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"


def chain_name(clinic_id: uuid.UUID | None) -> str:
    return str(clinic_id) if clinic_id is not None else PLATFORM_CHAIN


class AuditEvent(db.Model):
    """One audited action. Rows are only ever inserted: on PostgreSQL a trigger rejects
    UPDATE, DELETE and TRUNCATE, and `hash` chains each row to the previous one of its chain.
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        Index("ix_audit_event_clinic_id_occurred_at", "clinic_id", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    #: The clinic's UUID as text, or PLATFORM_CHAIN for events without a clinic.
    chain: Mapped[str] = mapped_column(String(36))
    #: Position in the chain, from 1 without gaps.
    seq: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clinic.id"))
    actor_type: Mapped[ActorType] = mapped_column(string_enum(ActorType, length=20))
    #: A user's or API key's UUID as text; None for the system and anonymous callers.
    actor_id: Mapped[str | None] = mapped_column(String(36), index=True)
    #: The actor's role in the clinic when the event happened (admin, doctor).
    actor_role: Mapped[str | None] = mapped_column(String(20))
    #: A stable dotted name such as `study.viewed`; see `portal.audit.actions`.
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[Outcome] = mapped_column(string_enum(Outcome, length=20))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(64))
    #: Flat facts about the event; `portal.audit.details` keeps patient data and secrets out.
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    #: SHA-256 (hex) of the canonical encoding of this row, `prev_hash` included.
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(db.Model):
    """The last sequence number and hash of one chain.

    Recording an event locks this row first, so two transactions of one clinic cannot
    both append after the same event. It also lets `audit verify` notice events
    deleted from the end of a chain.
    """

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(36), primary_key=True)
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clinic.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
