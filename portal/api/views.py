"""The JSON API: the same study actions as the pages, for integrations."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from portal.api.auth import api_key_required
from portal.categories import load_categories
from portal.errors import UserFacingError
from portal.extensions import csrf, db
from portal.studies import services
from portal.studies.error_catalogue import study_error_message
from portal.studies.models import Study

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)


class FileFieldMissing(UserFacingError):
    code = "upload_missing"
    status = 400
    title = _l("File missing")
    message = _l("Send the study's ZIP in the multipart field 'file'.")


def _locale() -> str:
    return str(get_locale() or "pt_BR")


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
        "attempt": attempt.number if attempt else None,
        "report": _report_json(attempt),
        "links": {
            "self": url_for("api.get_study", study_id=study.id),
            "status": url_for("api.get_study_status", study_id=study.id),
            "result": url_for("api.get_study_result", study_id=study.id),
        },
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
    attempt = study.latest_attempt
    error = None
    if attempt is not None and attempt.error_code:
        error = {
            "code": attempt.error_code,
            "message": study_error_message(attempt.error_code, attempt.error_detail),
        }
    return {
        "id": str(study.id),
        "status": str(study.status),
        "status_title": study.status.title,
        "progress": attempt.progress if attempt else 0,
        "error": error,
    }


@bp.get("/health/")
def health():
    storage_ok = current_app.extensions["portal_storage"].ping()
    try:
        db.session.execute(db.text("SELECT 1"))
        database_ok = True
    except Exception:  # noqa: BLE001 - reported as a failed check
        database_ok = False
    healthy = storage_ok and database_ok
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {"database": database_ok, "storage": storage_ok},
    }
    return jsonify(body), 200 if healthy else 503


@bp.get("/auth/categories/")
def categories():
    locale = _locale()
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
        api_key=g.api_key,
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
        study, storage=current_app.extensions["portal_storage"], locale=_locale()
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
