"""The JSON API: the same study actions as the pages, for integrations."""

from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request, url_for
from flask_babel import lazy_gettext as _l

from portal.api import schemas
from portal.api.auth import api_key_required
from portal.api.openapi import (
    AUTHENTICATED,
    AUTHENTICATED_ERRORS,
    PUBLIC,
    InvalidJsonBody,
    api_spec,
    responses,
)
from portal.audit import actions
from portal.audit.services import record_view
from portal.categories import load_categories
from portal.errors import UserFacingError
from portal.extensions import csrf, db
from portal.i18n import request_locale
from portal.privacy.identifiers import open_identifiers
from portal.privacy.retention import retention_json
from portal.studies import services
from portal.studies.error_catalogue import study_error_message
from portal.studies.listing import PageCursor, StudyFilter, list_studies_page
from portal.studies.models import Attempt, Study

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)

#: Errors of operations on one study: 404 when it does not exist, was deleted or belongs
#: to another clinic.
STUDY_ERRORS = AUTHENTICATED_ERRORS

#: Document and validate an authenticated operation on the clinic's studies.
studies_operation = functools.partial(api_spec.validate, security=AUTHENTICATED, tags=["studies"])
#: The same, for an operation on one study named by the `study_id` path parameter.
study_operation = functools.partial(
    studies_operation,
    path_parameter_descriptions={"study_id": "The study's id, as returned by the upload."},
)


class FileFieldMissing(UserFacingError):
    code = "upload_missing"
    status = 400
    title = _l("File missing")
    message = _l("Send the study's ZIP in the multipart field 'file'.")


def study_json(study: Study) -> dict:
    attempt = study.latest_attempt
    return {
        "id": str(study.id),
        "status": str(study.status),
        "created_at": study.created_at.isoformat(),
        "modality": study.modality,
        "series_description": study.series_description,
        "slice_count": study.slice_count,
        "categories": list(study.requested_categories or []),
        "legal_basis": study.legal_basis,
        # The clinic's own principals (its members and API keys) read the identifiers.
        "patient": open_identifiers(study).to_json(),
        "retention": retention_json(study),
        "attempt": attempt.number if attempt else None,
        "report": report_json(attempt),
        "links": {
            "self": url_for("api.get_study", study_id=study.id),
            "status": url_for("api.get_study_status", study_id=study.id),
            "result": url_for("api.get_study_result", study_id=study.id),
        },
    }


def attempt_error_json(attempt: Attempt) -> dict | None:
    if not attempt.error_code:
        return None
    return {
        "code": attempt.error_code,
        "message": study_error_message(attempt.error_code, attempt.error_detail),
    }


def report_json(attempt) -> dict | None:
    """Return the attempt's ingestion report with translated reasons and warnings."""
    from portal.studies.report_catalogue import reason_message, warning_message

    if attempt is None or not attempt.report:
        return None
    report = attempt.report
    series = [
        {
            "series_id": item.get("series_id"),
            "series_number": item.get("series_number"),
            "modality": item.get("modality"),
            "description": item.get("description"),
            "slices": item.get("slices", item.get("slice_count")),
            "pixel_spacing_mm": item.get("pixel_spacing_mm"),
            "slice_step_mm": item.get("slice_step_mm"),
            "orientation": item.get("orientation"),
            "chosen": bool(item.get("chosen")),
            "reason_code": item.get("reason_code"),
            "reason": reason_message(item.get("reason_code")),
        }
        for item in report.get("series") or []
    ]
    warnings = [
        {
            "code": warning.get("code"),
            "member_index": warning.get("member_index"),
            "message": warning_message(warning),
        }
        for warning in report.get("warnings") or []
    ]
    output = report.get("output") or {}
    return {
        "series": series,
        "chosen_series_id": report.get("chosen_series_id"),
        "warnings": warnings,
        "window": output.get("window"),
    }


def status_json(study: Study) -> dict:
    """Return the study's status and progress; queue position and time left are estimates."""
    attempt = study.latest_attempt
    estimate = services.progress_estimate(attempt) if attempt else None
    remaining_s = estimate.remaining_s if estimate else None
    settings = current_app.config["PORTAL_SETTINGS"]
    return {
        "id": str(study.id),
        "status": str(study.status),
        "status_title": study.status.title,
        "progress": attempt.progress if attempt else 0,
        "attempt": attempt.number if attempt else None,
        "queue_position": estimate.queue_position if estimate else None,
        "estimated_seconds_remaining": round(remaining_s) if remaining_s is not None else None,
        "delayed": (not study.status.is_terminal) and services.processing_delayed(settings),
        "error": attempt_error_json(attempt) if attempt else None,
    }


def attempt_json(attempt: Attempt) -> dict:
    return {
        "number": attempt.number,
        "status": str(attempt.status),
        "status_title": attempt.status.title,
        "created_at": attempt.created_at.isoformat(),
        "started_at": attempt.started_at.isoformat() if attempt.started_at else None,
        "finished_at": attempt.finished_at.isoformat() if attempt.finished_at else None,
        "requested_series_id": attempt.requested_series_id,
        "series_id": attempt.chosen_series_id,
        "error": attempt_error_json(attempt),
        "started_by": {
            "user_id": str(attempt.created_by_user_id) if attempt.created_by_user_id else None,
            "api_key_id": (
                str(attempt.created_by_api_key_id) if attempt.created_by_api_key_id else None
            ),
        },
        "cancelled_by": {
            "user_id": str(attempt.cancelled_by_user_id) if attempt.cancelled_by_user_id else None,
            "api_key_id": (
                str(attempt.cancelled_by_api_key_id) if attempt.cancelled_by_api_key_id else None
            ),
        },
    }


@bp.get("/health/")
@api_spec.validate(
    query=schemas.HealthQuery,
    resp=responses(HTTP_200=schemas.Health, HTTP_503=schemas.Health),
    security=PUBLIC,
    tags=["health"],
)
def health():
    """Check liveness, or readiness of every dependency with `?ready=1`.

    Liveness returns at once. Readiness checks the database, the queue, the storage and
    the inference API with 2 s each, and returns 503 naming the failed check.
    """
    if request.args.get("ready", "").lower() not in ("1", "true", "yes"):
        return jsonify({"status": "ok"})
    from portal.health import readiness_checks

    checks = readiness_checks(current_app)
    healthy = all(checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return jsonify(body), 200 if healthy else 503


@bp.get("/auth/categories/")
@api_spec.validate(
    resp=responses(HTTP_200=schemas.CategoryList, errors=(400,)),
    security=PUBLIC,
    tags=["studies"],
)
def categories():
    """List the segmentation categories an upload may request."""
    locale = request_locale()
    return jsonify(
        [
            {
                "value": category.value,
                "key": category.key,
                "name": category.name(locale),
                "color": category.color,
                "snomed_ct": category.snomed_ct,
            }
            for category in load_categories()
        ]
    )


@bp.get("/studies/")
@api_key_required
@studies_operation(
    query=schemas.StudyListQuery,
    resp=responses(HTTP_200=schemas.StudyPage, errors=AUTHENTICATED_ERRORS),
)
def list_studies():
    """List the clinic's studies, newest first, a page at a time.

    Filter by `status` (repeatable) and by upload time. Follow `next` until it is null;
    the cursor in it is opaque and keeps the filters of the first request.
    """
    query: schemas.StudyListQuery = request.context.query
    cursor = PageCursor.decode(query.cursor) if query.cursor else None
    filters = StudyFilter(
        statuses=tuple(query.status or ()),
        created_after=query.created_after,
        created_before=query.created_before,
    )
    page = list_studies_page(g.clinic, limit=query.limit, cursor=cursor, filters=filters)
    next_link = None
    if page.next_cursor is not None:
        next_link = url_for(
            "api.list_studies",
            limit=query.limit,
            status=[str(status) for status in filters.statuses],
            created_after=query.created_after.isoformat() if query.created_after else None,
            created_before=query.created_before.isoformat() if query.created_before else None,
            cursor=page.next_cursor.encode(),
        )
    return jsonify(
        {
            "items": [study_json(study) for study in page.studies],
            "limit": query.limit,
            "next": next_link,
        }
    )


@bp.post("/studies/")
@api_key_required
@studies_operation(
    form=schemas.StudyUpload,
    headers=schemas.UploadHeaders,
    resp=responses(
        HTTP_200=schemas.Study,
        HTTP_202=schemas.Study,
        errors=(*AUTHENTICATED_ERRORS, 409, 413),
    ),
)
def create_study():
    """Upload a study (a ZIP of DICOM files) and queue its processing.

    Send `multipart/form-data` with the ZIP in `file` and optional repeated `categories`.
    Returns 202 with the new study. With an `Idempotency-Key` header a retry is safe: the
    same key with the same ZIP and categories returns 200 with the study created first,
    and the same key with another upload returns 409 `idempotency_key_conflict`.
    """
    upload = request.files.get("file")
    if upload is None:
        raise FileFieldMissing()
    settings = current_app.config["PORTAL_SETTINGS"]
    outcome = services.create_study(
        clinic=g.clinic,
        stream=upload.stream,
        category_keys=request.form.getlist("categories"),
        storage=current_app.extensions["portal_storage"],
        max_upload_bytes=settings.max_upload_bytes,
        work_dir=Path(settings.data_dir) / "uploads",
        uploaded_by=g.principal.user,
        api_key=g.api_key,
        idempotency_key=request.context.headers.idempotency_key,
        legal_basis=request.form.get("legal_basis"),
        file_name=upload.filename or "",
    )
    db.session.commit()
    study = outcome.study
    if not outcome.replayed:
        services.queue_attempt(study.latest_attempt)
    response = jsonify(study_json(study))
    response.status_code = 200 if outcome.replayed else 202
    response.headers["Location"] = url_for("api.get_study", study_id=study.id)
    return response


@bp.get("/studies/<study_id>/")
@api_key_required
@study_operation(
    resp=responses(HTTP_200=schemas.Study, errors=STUDY_ERRORS),
)
def get_study(study_id):
    """Get a study: status, progress, the chosen series and the ingestion report."""
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    body = study_json(study) | {"progress": status_json(study)["progress"]}
    record_view(
        actions.STUDY_VIEWED,
        target_type="study",
        target_id=study.id,
        details={"channel": "api", "report_included": body["report"] is not None},
    )
    return jsonify(body)


@bp.get("/studies/<study_id>/status/")
@api_key_required
@study_operation(
    resp=responses(HTTP_200=schemas.StudyStatusBody, errors=STUDY_ERRORS),
)
def get_study_status(study_id):
    """Get a study's status and progress, for polling until a final status."""
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    return jsonify(status_json(study))


@bp.get("/studies/<study_id>/result/")
@bp.get("/studies/<study_id>/visualization/")
@api_key_required
@study_operation(
    resp=responses(HTTP_200=schemas.StudyResult, errors=(*STUDY_ERRORS, 409)),
)
def get_study_result(study_id):
    """Get presigned URLs of a succeeded study's image and mask (NIfTI).

    The URLs work for at most 300 s; ask again for new ones. Before success it returns
    409 `study_not_succeeded`.
    """
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    links = services.result_links(
        study, storage=current_app.extensions["portal_storage"], locale=request_locale()
    )
    db.session.commit()
    return jsonify(
        {
            "id": str(study.id),
            "image_url": links.image_url,
            "mask_url": links.mask_url,
            "expires_at": links.expires_at.isoformat(),
            "labels": links.labels,
        }
    )


@bp.get("/studies/<study_id>/report/")
@api_key_required
@study_operation(
    resp=responses(HTTP_200=schemas.StudyReport, errors=STUDY_ERRORS),
)
def get_study_report(study_id):
    """Get the ingestion report: every series found, the one chosen and why, warnings."""
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    attempt = study.latest_attempt
    body = {
        "id": str(study.id),
        "attempt": attempt.number if attempt else None,
        "report": report_json(attempt),
    }
    record_view(
        actions.STUDY_VIEWED,
        target_type="study",
        target_id=study.id,
        details={"channel": "api", "part": "report", "report_included": body["report"] is not None},
    )
    return jsonify(body)


def _api_actor() -> services.Actor:
    """Return who acts: the user of an access token, or the clinic API key."""
    principal = g.principal
    return services.Actor(
        user_id=principal.user.id if principal.user is not None else None,
        api_key_id=principal.api_key.id if principal.api_key is not None else None,
    )


@bp.post("/studies/<study_id>/cancel/")
@api_key_required
@study_operation(
    json=schemas.EmptyRequest,
    resp=responses(HTTP_200=schemas.StudyStatusBody, errors=(*STUDY_ERRORS, 409)),
)
def cancel_study(study_id):
    """Cancel a study's running attempt, and its job at the inference provider.

    The body is optional (an empty JSON object at most). Returns 409
    `study_not_cancellable` when the study has already finished.
    """
    if request.context.json is None and request.content_length:
        raise InvalidJsonBody()
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    attempt = services.cancel_study(study, actor=_api_actor())
    db.session.commit()
    services.after_cancel(attempt)
    return jsonify(status_json(study))


@bp.post("/studies/<study_id>/rerun/")
@api_key_required
@study_operation(
    json=schemas.RerunRequest,
    resp=responses(HTTP_202=schemas.Study, errors=(*STUDY_ERRORS, 409)),
)
def rerun_study(study_id):
    """Run a finished study again as a new attempt, optionally with another series.

    The body is optional. Returns 409 `study_busy` while an attempt is running.
    """
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    body: schemas.RerunRequest | None = request.context.json
    if body is None and request.content_length:
        raise InvalidJsonBody()
    series_id = body.series_id if body is not None else None
    attempt = services.rerun_study(study, actor=_api_actor(), series_id=series_id)
    db.session.commit()
    services.queue_attempt(attempt)
    response = jsonify(study_json(study))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_study_status", study_id=study.id)
    return response


@bp.delete("/studies/<study_id>/")
@api_key_required
@study_operation(
    resp=responses(204, errors=(*STUDY_ERRORS, 409)),
)
def delete_study(study_id):
    """Delete a study and its stored objects; a running attempt is cancelled first.

    A study on legal hold is not deleted: 409 `study_on_legal_hold`.
    """
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    cancelled = services.delete_study(study, actor=_api_actor())
    db.session.commit()
    services.after_delete(study, cancelled)
    return "", 204


@bp.get("/studies/<study_id>/attempts/")
@api_key_required
@study_operation(
    resp=responses(HTTP_200=schemas.AttemptList, errors=STUDY_ERRORS),
)
def list_attempts(study_id):
    """List every attempt of a study: status, times, series, error, who started it."""
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    record_view(
        actions.STUDY_VIEWED,
        target_type="study",
        target_id=study.id,
        details={"channel": "api", "part": "attempts"},
    )
    return jsonify({"id": str(study.id), "attempts": [attempt_json(a) for a in study.attempts]})
