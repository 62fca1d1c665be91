"""Privacy pages: the public notice, the admin's data subject requests and legal holds."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user

from portal.clinics.context import clinic_admin_required
from portal.extensions import db
from portal.privacy import requests as subject_requests
from portal.privacy import retention
from portal.privacy.forms import ErasureForm, PatientLookupForm
from portal.privacy.identifiers import studies_of_patient
from portal.studies.services import Actor, after_cancel, get_study_or_404

logger = logging.getLogger(__name__)

bp = Blueprint("privacy", __name__)


@bp.get("/privacy")
def notice():
    settings = current_app.config["PORTAL_SETTINGS"]
    return render_template("privacy/notice.html", raw_retention_hours=settings.raw_retention_hours)


@bp.get("/clinic/patient-data/")
@clinic_admin_required
def patient_data():
    return render_template("privacy/patient_data.html", form=PatientLookupForm())


@bp.post("/clinic/patient-data/")
@clinic_admin_required
def find_patient():
    # The patient ID travels in POST bodies only, so it never lands in a URL or access log.
    form = PatientLookupForm()
    if not form.validate_on_submit():
        return render_template("privacy/patient_data.html", form=form), 400
    studies = studies_of_patient(g.clinic, form.patient_id.data, include_deleted=True)
    erasure_form = ErasureForm(formdata=None, patient_id=form.patient_id.data)
    return render_template(
        "privacy/patient_data.html", form=form, studies=studies, erasure_form=erasure_form
    )


@bp.post("/clinic/patient-data/export")
@clinic_admin_required
def export_patient():
    form = PatientLookupForm()
    if not form.validate_on_submit():
        return render_template("privacy/patient_data.html", form=form), 400
    settings = current_app.config["PORTAL_SETTINGS"]
    path, _count = subject_requests.export_patient_data(
        g.clinic,
        form.patient_id.data,
        storage=current_app.extensions["portal_storage"],
        work_dir=Path(settings.data_dir) / "exports",
    )
    db.session.commit()
    # The open file outlives its name on POSIX systems, so the export leaves nothing on
    # disk once the response is sent.
    handle = path.open("rb")
    path.unlink()
    response = send_file(
        handle, mimetype="application/zip", as_attachment=True, download_name="patient-data.zip"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/clinic/patient-data/erase")
@clinic_admin_required
def erase_patient():
    form = ErasureForm()
    if not form.validate_on_submit():
        studies = (
            studies_of_patient(g.clinic, form.patient_id.data, include_deleted=True)
            if form.patient_id.data and not form.patient_id.errors
            else None
        )
        return render_template(
            "privacy/patient_data.html",
            form=PatientLookupForm(formdata=None, patient_id=form.patient_id.data),
            studies=studies,
            erasure_form=form,
        ), 400
    summary = subject_requests.erase_patient_data(
        g.clinic,
        form.patient_id.data,
        storage=current_app.extensions["portal_storage"],
        actor=Actor(user_id=current_user.id),
    )
    db.session.commit()
    for attempt in summary.cancelled_attempts:
        after_cancel(attempt)
    return render_template("privacy/erasure_done.html", summary=summary)


@bp.post("/studies/<study_id>/legal-hold")
@clinic_admin_required
def set_legal_hold(study_id):
    study = get_study_or_404(study_id, clinic=g.clinic)
    on_hold = request.form.get("hold") == "on"
    retention.set_legal_hold(study, on_hold=on_hold)
    db.session.commit()
    if on_hold:
        flash(_("Legal hold set: retention deletes nothing of this study until it is lifted."))
    else:
        flash(_("Legal hold lifted: retention applies to this study again."))
    return redirect(url_for("studies.detail", study_id=study.id))
