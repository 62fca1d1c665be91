"""Study pages: list, upload, progress, viewer."""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user

from portal.api.views import status_json
from portal.audit import actions
from portal.audit.services import record_view
from portal.categories import load_categories
from portal.clinics.context import clinic_member_required
from portal.errors import format_bytes
from portal.extensions import db
from portal.i18n import request_locale
from portal.studies import services
from portal.studies.error_catalogue import study_error_message
from portal.studies.forms import UploadForm
from portal.studies.report_catalogue import describe_report

bp = Blueprint("studies", __name__)


@bp.get("/")
def index():
    if current_user.is_authenticated and current_user.is_operator:
        return redirect(url_for("clinics.operator_clinics"))
    return redirect(url_for("studies.list_studies"))


@bp.route("/studies/", methods=["GET", "POST"])
@clinic_member_required
def list_studies():
    """List the clinic's studies; a POST searches by patient ID, kept out of URLs and logs."""
    from portal.privacy.forms import PatientLookupForm
    from portal.privacy.identifiers import open_identifiers, studies_of_patient

    form = PatientLookupForm()
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        studies = studies_of_patient(g.clinic, form.patient_id.data)
    else:
        status = 400 if request.method == "POST" else 200
        studies = services.list_studies(g.clinic)
    rows = [(study, open_identifiers(study)) for study in studies]
    searching = request.method == "POST" and status == 200
    return render_template("studies/list.html", rows=rows, form=form, searching=searching), status


@bp.route("/studies/new", methods=["GET", "POST"])
@clinic_member_required
def upload():
    form = UploadForm(locale=request_locale())
    settings = current_app.config["PORTAL_SETTINGS"]
    if not form.validate_on_submit():
        status = 400 if form.is_submitted() else 200
        max_upload = format_bytes(settings.max_upload_bytes)
        return render_template("studies/upload.html", form=form, max_upload=max_upload), status
    study = services.create_study(
        clinic=g.clinic,
        stream=form.file.data.stream,
        category_keys=form.categories.data,
        storage=current_app.extensions["portal_storage"],
        max_upload_bytes=settings.max_upload_bytes,
        work_dir=Path(settings.data_dir) / "uploads",
        uploaded_by=current_user,
        legal_basis=form.legal_basis.data,
        file_name=form.file.data.filename or "",
    ).study
    db.session.commit()
    services.queue_attempt(study.latest_attempt)
    return redirect(url_for("studies.detail", study_id=study.id))


@bp.get("/studies/<study_id>")
@clinic_member_required
def detail(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    report_context = _report_context(study)
    record_view(
        actions.STUDY_VIEWED,
        target_type="study",
        target_id=study.id,
        details={"channel": "page", "report_included": report_context["report"] is not None},
    )
    return render_template(
        "studies/detail.html",
        study=study,
        **_status_context(study),
        **report_context,
        **_privacy_context(study),
    )


@bp.get("/studies/<study_id>/status")
@clinic_member_required
def status_partial(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    response = current_app.make_response(
        render_template("studies/_status.html", study=study, **_status_context(study))
    )
    if study.status.is_terminal and request.headers.get("HX-Request"):
        # The report and the actions outside this partial change at the end, so htmx
        # reloads the page once; the reloaded page no longer polls.
        response.headers["HX-Refresh"] = "true"
    return response


@bp.get("/studies/<study_id>/viewer")
@clinic_member_required
def viewer(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    if study.latest_successful_attempt is None:
        return redirect(url_for("studies.detail", study_id=study.id))
    record_view(
        actions.VIEWER_OPENED,
        target_type="study",
        target_id=study.id,
        details={"attempt": study.latest_successful_attempt.number},
    )
    return render_template("studies/viewer.html", study=study)


@bp.get("/studies/<study_id>/viewer-data")
@clinic_member_required
def viewer_data(study_id):
    """Return fresh presigned URLs and the legend; the viewer calls it on each load."""
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    links = services.result_links(
        study,
        storage=current_app.extensions["portal_storage"],
        locale=request_locale(),
        prefer_native=True,
    )
    db.session.commit()
    response = jsonify(
        {
            "image_url": links.image_url,
            "mask_url": links.mask_url,
            "expires_at": links.expires_at.isoformat(),
            "grid": links.grid,
            "labels": links.labels,
            "missing_labels": missing_labels(study, links.labels, locale=request_locale()),
            "colormap": label_colormap(),
            "window_hu": window_hu(current_app.config["PORTAL_SETTINGS"], study.modality),
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def missing_labels(study, labels: list[dict], *, locale: str) -> list[dict]:
    """Return the requested categories that the result does not contain, by key and name."""
    from portal.categories import categories_by_key

    present = {label["key"] for label in labels}
    catalogue = categories_by_key()
    return [
        {"key": key, "name": catalogue[key].name(locale), "color": catalogue[key].color}
        for key in study.requested_categories or []
        if key in catalogue and key not in present
    ]


def window_hu(settings, modality: str | None) -> list[float] | None:
    """Return the display window [min, max] in HU for CT; None lets NiiVue choose for MR."""
    if modality != "CT":
        return None
    half_width = settings.dicom_window_width / 2
    return [settings.dicom_window_center - half_width, settings.dicom_window_center + half_width]


def label_colormap() -> dict:
    """Build NiiVue's label colormap (R, G, B, A, labels) from the category catalogue."""
    categories = sorted(load_categories(), key=lambda category: category.value)
    size = max(category.value for category in categories) + 1
    red, green, blue, alpha = [0] * size, [0] * size, [0] * size, [0] * size
    labels = [""] * size
    for category in categories:
        color = category.color.lstrip("#")
        red[category.value] = int(color[0:2], 16)
        green[category.value] = int(color[2:4], 16)
        blue[category.value] = int(color[4:6], 16)
        alpha[category.value] = 255
        labels[category.value] = category.key
    return {"R": red, "G": green, "B": blue, "A": alpha, "labels": labels}


def _page_actor() -> services.Actor:
    return services.Actor(user_id=current_user.id)


@bp.post("/studies/<study_id>/cancel")
@clinic_member_required
def cancel(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    attempt = services.cancel_study(study, actor=_page_actor())
    db.session.commit()
    services.after_cancel(attempt)
    flash(_("Processing cancelled."))
    return redirect(url_for("studies.detail", study_id=study.id))


@bp.post("/studies/<study_id>/rerun")
@clinic_member_required
def rerun(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    series_id = request.form.get("series_id") or None
    attempt = services.rerun_study(study, actor=_page_actor(), series_id=series_id)
    db.session.commit()
    services.queue_attempt(attempt)
    flash(_("The study is running again."))
    return redirect(url_for("studies.detail", study_id=study.id))


@bp.post("/studies/<study_id>/delete")
@clinic_member_required
def delete(study_id):
    study = services.get_study_or_404(study_id, clinic=g.clinic)
    cancelled = services.delete_study(study, actor=_page_actor())
    db.session.commit()
    services.after_delete(study, cancelled)
    flash(_("Study deleted."))
    return redirect(url_for("studies.list_studies"))


def _report_context(study) -> dict:
    """Translate the latest attempt's report and find the series a user may pick.

    The picker appears once the study is finished, because a running study cannot run again.
    """
    attempt = study.latest_attempt
    report = describe_report(attempt.report if attempt is not None else None)
    can_rerun = study.status.is_terminal and study.raw_data_deleted_at is None
    rerun_url = url_for("studies.rerun", study_id=study.id) if can_rerun else None
    pickable = [row for row in report.series if row.is_pickable] if report else []
    return {"report": report, "rerun_url": rerun_url, "pickable_series": pickable}


def _privacy_context(study) -> dict:
    """Open the patient identifiers for the clinic's member and describe the retention."""
    from portal.clinics.models import Role
    from portal.privacy.identifiers import open_identifiers
    from portal.privacy.legal_basis import LEGAL_BASES
    from portal.privacy.retention import retention_facts

    return {
        "patient": open_identifiers(study),
        "legal_basis": LEGAL_BASES.get(study.legal_basis),
        "retention": retention_facts(study),
        "is_admin": g.membership.role == Role.ADMIN,
    }


def _status_context(study) -> dict:
    attempt = study.latest_attempt
    error_message = None
    if attempt is not None and attempt.error_code:
        error_message = study_error_message(attempt.error_code, attempt.error_detail)
    return {
        "status": status_json(study),
        "attempt": attempt,
        "error_message": error_message,
        "attempt_errors": {
            item.id: study_error_message(item.error_code, item.error_detail)
            for item in study.attempts
            if item.error_code
        },
    }
