"""The JSON API: the same study actions as the pages, for integrations."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request, url_for
from flask_babel import lazy_gettext as _l

from portal.api.auth import api_key_required
from portal.categories import load_categories
from portal.errors import UserFacingError
from portal.extensions import csrf, db
from portal.i18n import request_locale
from portal.privacy.identifiers import open_identifiers
from portal.privacy.retention import retention_json
from portal.studies import services
from portal.studies.error_catalogue import study_error_message
from portal.studies.models import Attempt, Study

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)


class InvalidJsonBody(UserFacingError):
    code = "invalid_body"
    status = 400
    title = _l("Invalid request")
    message = _l('Send a JSON object, for example {"series_id": "..."}, or no body.')


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
        "report": _report_json(attempt),
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


def _report_json(attempt) -> dict | None:
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
def health():
    """Liveness at once; with `?ready=1`, readiness of every dependency with short timeouts."""
    if request.args.get("ready", "").lower() not in ("1", "true", "yes"):
        return jsonify({"status": "ok"})
    from portal.health import readiness_checks

    checks = readiness_checks(current_app)
    healthy = all(checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return jsonify(body), 200 if healthy else 503


@bp.get("/auth/categories/")
def categories():
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


@bp.post("/studies/")
@api_key_required
def create_study():
    upload = request.files.get("file")
    if upload is None:
        raise FileFieldMissing()
    settings = current_app.config["PORTAL_SETTINGS"]
    study = services.create_study(
        clinic=g.clinic,
        stream=upload.stream,
        category_keys=request.form.getlist("categories"),
        storage=current_app.extensions["portal_storage"],
        max_upload_bytes=settings.max_upload_bytes,
        work_dir=Path(settings.data_dir) / "uploads",
        uploaded_by=g.principal.user,
        api_key=g.api_key,
        legal_basis=request.form.get("legal_basis"),
        file_name=upload.filename or "",
    )
    db.session.commit()
    services.queue_attempt(study.latest_attempt)
    response = jsonify(study_json(study))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_study", study_id=study.id)
    return response


@bp.get("/studies/<study_id>/")
@api_key_required
def get_study(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    return jsonify(study_json(study) | {"progress": status_json(study)["progress"]})


@bp.get("/studies/<study_id>/status/")
@api_key_required
def get_study_status(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    return jsonify(status_json(study))


@bp.get("/studies/<study_id>/result/")
@bp.get("/studies/<study_id>/visualization/")
@api_key_required
def get_study_result(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    links = services.result_links(
        study, storage=current_app.extensions["portal_storage"], locale=request_locale()
    )
    return jsonify(
        {
            "id": str(study.id),
            "image_url": links.image_url,
            "mask_url": links.mask_url,
            "expires_at": links.expires_at.isoformat(),
            "labels": links.labels,
        }
    )


def _api_actor() -> services.Actor:
    """Return who acts: the user of an access token, or the clinic API key."""
    principal = g.principal
    return services.Actor(
        user_id=principal.user.id if principal.user is not None else None,
        api_key_id=principal.api_key.id if principal.api_key is not None else None,
    )


@bp.post("/studies/<study_id>/cancel/")
@api_key_required
def cancel_study(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    attempt = services.cancel_study(study, actor=_api_actor())
    db.session.commit()
    services.after_cancel(attempt)
    return jsonify(status_json(study))


@bp.post("/studies/<study_id>/rerun/")
@api_key_required
def rerun_study(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise InvalidJsonBody()
    attempt = services.rerun_study(study, actor=_api_actor(), series_id=body.get("series_id"))
    db.session.commit()
    services.queue_attempt(attempt)
    response = jsonify(study_json(study))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_study_status", study_id=study.id)
    return response


@bp.delete("/studies/<study_id>/")
@api_key_required
def delete_study(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    cancelled = services.delete_study(study, actor=_api_actor())
    db.session.commit()
    services.after_delete(study, cancelled)
    return "", 204


@bp.get("/studies/<study_id>/attempts/")
@api_key_required
def list_attempts(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    return jsonify({"id": str(study.id), "attempts": [attempt_json(a) for a in study.attempts]})
