"""The clinic admins' audit page and its CSV export."""

from __future__ import annotations

import csv
import io
import json
import logging

from flask import Blueprint, Response, current_app, g, render_template, request, stream_with_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from portal.audit import actions, queries
from portal.audit.models import ActorType, Outcome
from portal.audit.services import record
from portal.clinics.context import clinic_admin_required
from portal.clinics.members import list_members
from portal.clinics.services import list_api_keys
from portal.extensions import db

logger = logging.getLogger(__name__)

bp = Blueprint("audit", __name__, url_prefix="/clinic/audit")

#: Characters that make a spreadsheet read a cell as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _timezone() -> str:
    return current_app.config["PORTAL_SETTINGS"].default_timezone


def actor_labels(clinic) -> dict[str, str]:
    """Map the ids of the clinic's members and API keys to names a person recognises."""
    labels = {
        str(membership.user_id): membership.user.display_name or membership.user.email
        for membership in list_members(clinic, include_removed=True)
    }
    for api_key in list_api_keys(clinic):
        labels[str(api_key.id)] = _("API key %(name)s", name=api_key.name)
    return labels


def actor_label(event, labels: dict[str, str]) -> str:
    if event.actor_type == ActorType.SYSTEM:
        return _("System")
    if event.actor_type == ActorType.ANONYMOUS:
        return _("Anonymous")
    return labels.get(event.actor_id or "", event.actor_id or "")


OUTCOME_TITLES = {
    Outcome.SUCCESS: _l("Success"),
    Outcome.DENIED: _l("Denied"),
    Outcome.FAILED: _l("Failed"),
}


@bp.get("/")
@clinic_admin_required
def audit_page():
    try:
        filters = queries.parse_filters(request.args)
        before = queries.parse_before(request.args.get("before"))
        limit = queries.parse_limit(request.args.get("limit"))
    except queries.InvalidAuditFilter as error:
        logger.info(
            "audit page of clinic %s: invalid filter %s", g.clinic.id, error.params.get("name")
        )
        # Show the form again with the reason, rather than an error page without it.
        return _render_audit_page(queries.EventFilters(), None, filter_error=error.detail()), 400
    page = queries.page_of_events(
        g.clinic.id, filters, timezone=_timezone(), before=before, limit=limit
    )
    return _render_audit_page(filters, page)


def _render_audit_page(filters, page, *, filter_error: str | None = None) -> str:
    labels = actor_labels(g.clinic)
    return render_template(
        "audit/events.html",
        page=page or queries.EventPage(events=[], next_before=None),
        filter_error=filter_error,
        filters=filters,
        query_args=filters.as_query_args(),
        labels=labels,
        people=sorted(labels.items(), key=lambda item: item[1].lower()),
        action_titles=sorted(
            ((name, str(title)) for name, title in actions.ACTION_TITLES.items()),
            key=lambda item: item[1].lower(),
        ),
        actor_label=actor_label,
        action_title=actions.action_title,
        outcome_titles=OUTCOME_TITLES,
    )


def _csv_cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


CSV_COLUMNS = (
    "seq",
    "occurred_at",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_role",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)


@bp.get("/export.csv")
@clinic_admin_required
def export_csv():
    """Stream the filtered events as CSV; the export itself is recorded first."""
    filters = queries.parse_filters(request.args)
    record(actions.AUDIT_EXPORTED, details={"format": "csv", **filters.as_query_args()})
    db.session.commit()
    labels = actor_labels(g.clinic)
    clinic_id = g.clinic.id
    timezone = _timezone()

    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for event in queries.iterate_events(clinic_id, filters, timezone=timezone):
            writer.writerow(
                _csv_cell(value)
                for value in (
                    event.seq,
                    event.occurred_at.isoformat(),
                    event.action,
                    event.outcome,
                    event.actor_type,
                    event.actor_id,
                    actor_label(event, labels),
                    event.actor_role,
                    event.target_type,
                    event.target_id,
                    event.ip,
                    event.user_agent,
                    event.request_id,
                    json.dumps(event.details, sort_keys=True, ensure_ascii=False),
                    event.prev_hash,
                    event.hash,
                )
            )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue()

    response = Response(stream_with_context(rows()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
