"""The clinic admin's page for API keys: create (the key is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, g, redirect, render_template, url_for
from flask_login import current_user

from portal.clinics import services
from portal.clinics.api_key_forms import CreateApiKeyForm, RevokeApiKeyForm
from portal.clinics.context import clinic_member_required
from portal.clinics.models import Role
from portal.errors import Forbidden
from portal.extensions import db

bp = Blueprint("api_keys", __name__, url_prefix="/clinic/api-keys")


def _require_admin() -> None:
    if g.membership.role != Role.ADMIN:
        raise Forbidden()


def _end_of_day(day) -> datetime:
    """Return the first instant after `day` in the portal's time zone."""
    zone = ZoneInfo(current_app.config["PORTAL_SETTINGS"].default_timezone)
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def _list_page(form: CreateApiKeyForm, *, status: int = 200):
    return render_template(
        "clinics/api_keys.html",
        form=form,
        revoke_form=RevokeApiKeyForm(),
        api_keys=services.list_api_keys(g.clinic),
    ), status


@bp.get("/")
@clinic_member_required
def list_keys():
    _require_admin()
    return _list_page(CreateApiKeyForm())


@bp.post("/")
@clinic_member_required
def create_key():
    _require_admin()
    form = CreateApiKeyForm()
    if not form.validate_on_submit():
        return _list_page(form, status=400)
    expires_at = _end_of_day(form.expires_on.data) if form.expires_on.data else None
    api_key, token = services.create_api_key(
        g.clinic, name=form.name.data, expires_at=expires_at, created_by=current_user
    )
    db.session.commit()
    response = current_app.make_response(
        (render_template("clinics/api_key_created.html", api_key=api_key, token=token), 201)
    )
    # The page contains the only copy of the secret, so no cache may store it.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<key_id>/revoke")
@clinic_member_required
def revoke_key(key_id):
    api_key = services.get_api_key_or_404(key_id, clinic=g.clinic)
    _require_admin()
    if RevokeApiKeyForm().validate_on_submit():
        services.revoke_api_key(api_key, revoked_by=current_user)
        db.session.commit()
    return redirect(url_for("api_keys.list_keys"))
