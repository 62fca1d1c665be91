"""The audit trail: one append-only table of events, hash-chained per clinic.

Other packages call `record(action, ...)` where an action happens; see
`portal.audit.services` for which transaction an event is written in.
"""

from portal.audit.services import AuditActor, record

__all__ = ["AuditActor", "record"]
