"""Check the audit chains and anchor their heads in object storage.

`verify_chains` recomputes every event's hash. An attacker who can write to the database
could still rebuild a whole chain with fresh hashes, so `anchor_chain_heads` copies each
chain's head (seq, hash, time) to object storage, where S3 Object Lock keeps it
unchangeable in production. `verify_chains` also checks each chain against its latest
anchor, which such a rebuild cannot match.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from portal.audit.chain import ChainBreak, find_chain_break
from portal.audit.models import AuditChainHead, AuditEvent
from portal.db_types import utcnow
from portal.extensions import db
from portal.tenancy import all_clinics

logger = logging.getLogger(__name__)

#: Events read from the database per round trip while a chain is verified.
VERIFY_BATCH_SIZE = 1000


def anchor_prefix(chain: str) -> str:
    return f"audit/{chain}/heads/"


@dataclass(frozen=True)
class ChainReport:
    chain: str
    event_count: int
    broken: ChainBreak | None


def _chain_events(chain: str) -> Iterator[AuditEvent]:
    query = (
        select(AuditEvent)
        .where(AuditEvent.chain == chain)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=VERIFY_BATCH_SIZE)
    )
    # Closing the result also closes PostgreSQL's server-side cursor when the walk
    # stops early at a broken link.
    with contextlib.closing(db.session.scalars(query)) as result:
        yield from result


class _Counter:
    """Count the events of an iterator as they pass."""

    def __init__(self, events):
        self.events = events
        self.count = 0

    def __iter__(self):
        for event in self.events:
            self.count += 1
            yield event


def chain_names() -> list[str]:
    """List every chain that has events or a head row, sorted."""
    with all_clinics():
        from_events = db.session.scalars(select(AuditEvent.chain).distinct()).all()
        from_heads = db.session.scalars(select(AuditChainHead.chain)).all()
    return sorted(set(from_events) | set(from_heads))


def verify_chain(chain: str, *, storage=None) -> ChainReport:
    """Recompute one chain; with `storage`, also compare it with its latest anchor."""
    with all_clinics():
        head = db.session.get(AuditChainHead, chain)
        with contextlib.closing(_chain_events(chain)) as stream:
            events = _Counter(stream)
            broken = find_chain_break(
                chain,
                events,
                head_seq=head.seq if head is not None else None,
                head_hash=head.hash if head is not None else None,
            )
        if broken is None and head is None and events.count:
            broken = ChainBreak(chain, None, None, "the chain head row is missing")
        if broken is None and storage is not None:
            broken = _check_latest_anchor(chain, storage)
    return ChainReport(chain, events.count, broken)


def verify_chains(chain: str | None = None, *, storage=None) -> list[ChainReport]:
    """Verify one chain, or every chain, and return a report per chain."""
    names = [chain] if chain is not None else chain_names()
    return [verify_chain(name, storage=storage) for name in names]


def _anchor_bucket() -> str | None:
    return current_app.config["PORTAL_SETTINGS"].audit_anchor_bucket or None


def _check_latest_anchor(chain: str, storage) -> ChainBreak | None:
    bucket = _anchor_bucket()
    keys = storage.list_keys(anchor_prefix(chain), bucket=bucket)
    if not keys:
        return None
    # Anchor keys end in a sortable UTC timestamp, so the last key is the newest.
    anchor = json.loads(storage.read_bytes(sorted(keys)[-1], bucket=bucket))
    seq, expected_hash = int(anchor["seq"]), anchor["hash"]
    if seq == 0:
        return None
    event = db.session.scalar(
        select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq == seq)
    )
    if event is None:
        return ChainBreak(chain, seq, None, "the event of the latest anchor is missing")
    if event.hash != expected_hash:
        return ChainBreak(
            chain,
            seq,
            str(event.id),
            "hash differs from the latest anchor in object storage (the chain was rebuilt)",
        )
    return None


def anchor_chain_heads(storage) -> list[str]:
    """Write each chain's head to `audit/<chain>/heads/<UTC time>.json`; return the keys."""
    now = utcnow()
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")

    with all_clinics():
        heads = db.session.scalars(select(AuditChainHead).order_by(AuditChainHead.chain)).all()
        documents = [
            {
                "chain": head.chain,
                "clinic_id": str(head.clinic_id) if head.clinic_id else None,
                "seq": head.seq,
                "hash": head.hash,
                "head_updated_at": head.updated_at.isoformat() if head.updated_at else None,
                "anchored_at": now.isoformat(),
            }
            for head in heads
        ]
    db.session.commit()

    settings = current_app.config["PORTAL_SETTINGS"]
    retain_until = None
    if settings.audit_anchor_retention_days > 0:
        retain_until = now + timedelta(days=settings.audit_anchor_retention_days)
    keys = []
    for document in documents:
        key = f"{anchor_prefix(document['chain'])}{stamp}.json"
        storage.put_bytes(
            key,
            json.dumps(document, sort_keys=True).encode(),
            content_type="application/json",
            bucket=_anchor_bucket(),
            retain_until=retain_until,
        )
        keys.append(key)
    logger.info("anchored %d audit chain heads", len(keys))
    return keys
