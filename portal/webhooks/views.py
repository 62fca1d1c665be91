"""The clinic admin's webhook pages: register, list, enable, disable, delete, history."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.clinics.context import clinic_admin_required
from portal.clinics.forms import ConfirmForm
from portal.extensions import db
from portal.webhooks import services
from portal.webhooks.forms import EndpointForm
from portal.webhooks.models import DeliveryStatus

bp = Blueprint("webhooks", __name__, url_prefix="/clinic/webhooks")


def _settings():
    return current_app.config["PORTAL_SETTINGS"]


def _list_page(form: EndpointForm, *, status: int = 200):
    return render_template(
        "webhooks/list.html",
        form=form,
        action_form=ConfirmForm(),
        endpoints=services.list_endpoints(g.clinic),
    ), status


@bp.get("/")
@clinic_admin_required
def list_endpoints():
    return _list_page(EndpointForm())


@bp.post("/")
@clinic_admin_required
def create_endpoint():
    form = EndpointForm()
    if not form.validate_on_submit():
        return _list_page(form, status=400)
    settings = _settings()
    try:
        endpoint, secret = services.create_endpoint(
            g.clinic,
            url=form.url.data,
            events=form.events.data,
            created_by=current_user,
            secret_key=settings.secret_key,
            allow_loopback_http=settings.webhook_allow_loopback_http,
        )
    except services.WebhookUrlRejected as error:
        db.session.rollback()
        form.url.errors = [*form.url.errors, error.detail()]
        return _list_page(form, status=error.status)
    db.session.commit()
    response = current_app.make_response(
        (render_template("webhooks/created.html", endpoint=endpoint, secret=secret), 201)
    )
    # The page contains the only copy of the secret, so no cache may store it.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<endpoint_id>")
@clinic_admin_required
def endpoint_page(endpoint_id):
    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    return render_template(
        "webhooks/endpoint.html",
        endpoint=endpoint,
        deliveries=services.list_deliveries(endpoint),
        pending=DeliveryStatus.PENDING,
        action_form=ConfirmForm(),
    )


@bp.get("/<endpoint_id>/deliveries")
@clinic_admin_required
def deliveries_partial(endpoint_id):
    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    return render_template(
        "webhooks/_deliveries.html",
        endpoint=endpoint,
        deliveries=services.list_deliveries(endpoint),
        pending=DeliveryStatus.PENDING,
    )


@bp.post("/<endpoint_id>/disable")
@clinic_admin_required
def disable_endpoint(endpoint_id):
    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    if ConfirmForm().validate_on_submit():
        services.set_endpoint_active(endpoint, False, actor=current_user)
        db.session.commit()
        flash(_("Webhook disabled. New events are not sent to it."), "success")
    return redirect(url_for("webhooks.endpoint_page", endpoint_id=endpoint.id))


@bp.post("/<endpoint_id>/enable")
@clinic_admin_required
def enable_endpoint(endpoint_id):
    from portal.tasks import queue_webhook_deliveries

    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    if ConfirmForm().validate_on_submit():
        services.set_endpoint_active(endpoint, True, actor=current_user)
        db.session.commit()
        # Deliveries that waited while it was disabled go out now.
        queue_webhook_deliveries([endpoint.id])
        flash(_("Webhook enabled."), "success")
    return redirect(url_for("webhooks.endpoint_page", endpoint_id=endpoint.id))


@bp.get("/<endpoint_id>/delete")
@clinic_admin_required
def confirm_delete(endpoint_id):
    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    return render_template("webhooks/confirm_delete.html", endpoint=endpoint, form=ConfirmForm())


@bp.post("/<endpoint_id>/delete")
@clinic_admin_required
def delete_endpoint(endpoint_id):
    endpoint = services.get_endpoint_or_404(g.clinic, endpoint_id)
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("webhooks.confirm_delete", endpoint_id=endpoint.id))
    services.delete_endpoint(endpoint, actor=current_user)
    db.session.commit()
    flash(_("Webhook deleted with its delivery history."), "success")
    return redirect(url_for("webhooks.list_endpoints"))
