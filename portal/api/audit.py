"""`GET /api/audit/events/`: the clinic's audit events for its admins, newest first."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request, url_for

from portal.api import schemas
from portal.api.auth import api_key_required
from portal.api.openapi import AUTHENTICATED, AUTHENTICATED_ERRORS, api_spec, responses
from portal.audit import queries
from portal.audit.models import AuditEvent
from portal.extensions import csrf

bp = Blueprint("api_audit", __name__, url_prefix="/api/audit")
csrf.exempt(bp)


def event_json(event: AuditEvent) -> dict:
    return {
        "id": str(event.id),
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "action": event.action,
        "outcome": str(event.outcome),
        "actor": {"type": str(event.actor_type), "id": event.actor_id, "role": event.actor_role},
        "target": {"type": event.target_type, "id": event.target_id},
        "ip": event.ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


@bp.get("/events/")
@api_key_required
@api_spec.validate(
    query=schemas.AuditEventQuery,
    resp=responses(HTTP_200=schemas.AuditEventPage, errors=AUTHENTICATED_ERRORS),
    security=AUTHENTICATED,
    tags=["audit"],
)
def list_events():
    """List events with the page's filters (`person`, `action`, `study`, `from`, `to`).

    Paged by `cursor` (from `next_cursor` of the previous page) and `limit` (1-200,
    default 50). Only a user with the admin role may call it; an API key gets 403.
    """
    g.principal.require_admin()
    filters = queries.parse_filters(request.args)
    page = queries.page_of_events(
        g.clinic.id,
        filters,
        timezone=current_app.config["PORTAL_SETTINGS"].default_timezone,
        before=queries.parse_before(request.args.get("cursor"), name="cursor"),
        limit=queries.parse_limit(request.args.get("limit")),
    )
    next_cursor = str(page.next_before) if page.next_before is not None else None
    next_url = None
    if next_cursor is not None:
        next_url = url_for(
            "api_audit.list_events",
            cursor=next_cursor,
            limit=request.args.get("limit") or None,
            **filters.as_query_args(),
        )
    return jsonify(
        {
            "events": [event_json(event) for event in page.events],
            "next_cursor": next_cursor,
            "links": {"next": next_url},
        }
    )
