"""The hash chain: canonical encoding of an event and the check of a whole chain.

An event's hash is SHA-256 over the UTF-8 bytes of a JSON object holding every stored
field except `hash` itself, `prev_hash` included. The JSON has sorted keys, no spaces,
non-ASCII characters kept as they are, UUIDs as lower-case text and times as UTC ISO 8601
with microseconds, so the same row always encodes to the same bytes on SQLite and
PostgreSQL. Changing this encoding makes every stored chain fail verification, so it
carries a version number.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from portal.audit.models import GENESIS_HASH

ENCODING_VERSION = 1

#: The fields that the hash covers, in the order `canonical_event` writes them.
HASHED_FIELDS = (
    "id",
    "chain",
    "seq",
    "occurred_at",
    "clinic_id",
    "actor_type",
    "actor_id",
    "actor_role",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "user_agent",
    "request_id",
    "details",
    "prev_hash",
)


def _plain(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("audit times must be timezone-aware")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, str):
        # StrEnum members encode as their value.
        return str(value)
    return value


def canonical_event(fields: dict) -> bytes:
    """Encode an event's hashed fields as canonical JSON bytes."""
    document = {"v": ENCODING_VERSION}
    for name in HASHED_FIELDS:
        document[name] = _plain(fields[name])
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def event_hash(fields: dict) -> str:
    return hashlib.sha256(canonical_event(fields)).hexdigest()


def event_fields(event) -> dict:
    """Read the hashed fields of a stored AuditEvent."""
    return {name: getattr(event, name) for name in HASHED_FIELDS}


@dataclass(frozen=True)
class ChainBreak:
    """The first link of a chain that does not verify."""

    chain: str
    seq: int | None
    event_id: str | None
    problem: str

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "end of chain"
        event = f" (event {self.event_id})" if self.event_id else ""
        return f"chain {self.chain}: {where}{event}: {self.problem}"


def find_chain_break(
    chain: str,
    events: Iterable,
    *,
    head_seq: int | None = None,
    head_hash: str | None = None,
) -> ChainBreak | None:
    """Walk one chain's events in `seq` order and return its first broken link, if any.

    Each event must carry the next sequence number, its `prev_hash` must equal the
    previous event's hash, and its `hash` must match its recomputed encoding. When the
    chain head is given, the last event must match it, which reveals events deleted
    from the end.
    """
    expected_seq = 1
    previous_hash = GENESIS_HASH
    for event in events:
        event_id = str(event.id)
        if event.seq != expected_seq:
            return ChainBreak(
                chain,
                event.seq,
                event_id,
                f"sequence number {event.seq} found where {expected_seq} was expected "
                "(an event was deleted or renumbered)",
            )
        if event.prev_hash != previous_hash:
            return ChainBreak(
                chain,
                event.seq,
                event_id,
                "prev_hash does not match the hash of the previous event",
            )
        recomputed = event_hash(event_fields(event))
        if recomputed != event.hash:
            return ChainBreak(
                chain,
                event.seq,
                event_id,
                "stored hash does not match the event's contents (the row was altered)",
            )
        previous_hash = event.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if head_seq is not None and head_seq != last_seq:
        return ChainBreak(
            chain,
            None,
            None,
            f"the chain head is at seq {head_seq} but the last event is seq {last_seq} "
            "(events were deleted from the end)",
        )
    if head_hash is not None and head_seq == last_seq and head_hash != previous_hash:
        return ChainBreak(
            chain,
            last_seq,
            None,
            "the chain head's hash does not match the last event's hash",
        )
    return None
