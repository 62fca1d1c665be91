"""Clinic pages: members, invitations, seats, switching clinics, and accepting an invitation."""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, current_app, flash, g, redirect, render_template, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from portal.clinics import invitations as invitation_service
from portal.clinics import members as member_service
from portal.clinics.context import (
    SESSION_CLINIC_KEY,
    clinic_admin_required,
    clinic_member_required,
    switch_clinic,
)
from portal.clinics.forms import ConfirmForm, InviteForm, RoleForm, SeatsForm, SwitchClinicForm
from portal.clinics.models import InvitationStatus, Role
from portal.clinics.services import (
    get_clinic_or_404,
    list_clinics_with_usage,
    seat_usage,
    set_seat_limit,
)
from portal.errors import NotFound, UserFacingError
from portal.extensions import db
from portal.tenancy import all_clinics

logger = logging.getLogger(__name__)

bp = Blueprint("clinics", __name__)


def _settings():
    return current_app.config["PORTAL_SETTINGS"]


def _render_clinic_page(invite_form: InviteForm | None = None, status: int = 200):
    clinic = g.clinic
    page = render_template(
        "clinics/clinic.html",
        clinic=clinic,
        usage=seat_usage(clinic),
        members=member_service.list_members(clinic, include_removed=True),
        # Expired invitations stay listed so that an admin can send them again.
        invitations=invitation_service.list_invitations(
            clinic, statuses=(InvitationStatus.PENDING, InvitationStatus.EXPIRED)
        ),
        invite_form=invite_form or InviteForm(),
        role_form=RoleForm(),
        confirm_form=ConfirmForm(),
        is_admin=g.membership.role == Role.ADMIN,
    )
    return page, status


@bp.get("/clinic/")
@clinic_member_required
def clinic_page():
    return _render_clinic_page()


@bp.post("/clinic/invitations")
@clinic_admin_required
def invite():
    form = InviteForm()
    if not form.validate_on_submit():
        return _render_clinic_page(form, 400)
    try:
        invitation_service.invite(
            g.clinic,
            email=form.email.data,
            role=form.role.data,
            locale=form.locale.data,
            invited_by=current_user,
            settings=_settings(),
        )
    except UserFacingError as error:
        db.session.rollback()
        form.email.errors = [*form.email.errors, error.detail()]
        return _render_clinic_page(form, error.status)
    db.session.commit()
    flash(_("Invitation sent."), "success")
    return redirect(url_for("clinics.clinic_page"))


@bp.post("/clinic/invitations/<invitation_id>/resend")
@clinic_admin_required
def resend_invitation(invitation_id):
    invitation = invitation_service.get_invitation_or_404(g.clinic, invitation_id)
    invitation_service.resend_invitation(invitation, actor=current_user, settings=_settings())
    db.session.commit()
    flash(_("Invitation sent again with a new link."), "success")
    return redirect(url_for("clinics.clinic_page"))


@bp.post("/clinic/invitations/<invitation_id>/revoke")
@clinic_admin_required
def revoke_invitation(invitation_id):
    invitation = invitation_service.get_invitation_or_404(g.clinic, invitation_id)
    invitation_service.revoke_invitation(invitation, actor=current_user)
    db.session.commit()
    flash(_("Invitation revoked."), "success")
    return redirect(url_for("clinics.clinic_page"))


@bp.post("/clinic/members/<membership_id>/role")
@clinic_admin_required
def change_role(membership_id):
    membership = member_service.get_membership_or_404(g.clinic, membership_id)
    form = RoleForm()
    if not form.validate_on_submit():
        raise NotFound()
    member_service.change_role(membership, form.role.data, actor=current_user)
    db.session.commit()
    flash(_("Role changed."), "success")
    return redirect(url_for("clinics.clinic_page"))


@bp.get("/clinic/members/<membership_id>/remove")
@clinic_admin_required
def confirm_remove(membership_id):
    membership = member_service.get_membership_or_404(g.clinic, membership_id)
    return render_template("clinics/confirm_remove.html", membership=membership, form=ConfirmForm())


@bp.post("/clinic/members/<membership_id>/remove")
@clinic_admin_required
def remove_member(membership_id):
    membership = member_service.get_membership_or_404(g.clinic, membership_id)
    member_service.remove_member(membership, actor=current_user)
    db.session.commit()
    flash(_("Member removed. Their studies stay with the clinic."), "success")
    return redirect(url_for("clinics.clinic_page"))


@bp.post("/clinic/switch")
@login_required
def switch():
    form = SwitchClinicForm()
    clinic = switch_clinic(form.clinic_id.data) if form.validate_on_submit() else None
    if clinic is None:
        raise NotFound()
    logger.info("user %s switched to clinic %s", current_user.id, clinic.id)
    return redirect(url_for("studies.list_studies"))


@bp.get("/invitations/<token>")
def invitation(token):
    invitation = invitation_service.find_invitation_by_token(token)
    invitation_service.check_invitation_open(invitation)
    return render_template(
        "clinics/invitation.html",
        invitation=invitation,
        clinic=invitation.clinic,
        token=token,
        form=ConfirmForm(),
    )


@bp.post("/invitations/<token>/accept")
@login_required
def accept_invitation(token):
    membership = invitation_service.accept_invitation(
        token, user=current_user, settings=_settings()
    )
    db.session.commit()
    session[SESSION_CLINIC_KEY] = str(membership.clinic_id)
    flash(_("Welcome to %(clinic)s.", clinic=membership.clinic.name), "success")
    return redirect(url_for("studies.list_studies"))


def operator_required(view):
    """Require a signed-in platform operator; anyone else gets 404, as for a missing page."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return current_app.login_manager.unauthorized()
        if not current_user.is_operator:
            raise NotFound()
        return view(*args, **kwargs)

    return wrapper


@bp.get("/operator/clinics/")
@operator_required
def operator_clinics():
    with all_clinics():
        clinics = list_clinics_with_usage()
    return render_template("clinics/operator.html", clinics=clinics, form=SeatsForm())


@bp.post("/operator/clinics/<clinic_id>/seats")
@operator_required
def operator_set_seats(clinic_id):
    clinic = get_clinic_or_404(clinic_id)
    form = SeatsForm()
    if not form.validate_on_submit():
        flash(_("Seats must be a whole number of at least 1."), "error")
        return redirect(url_for("clinics.operator_clinics"))
    set_seat_limit(clinic, form.seats.data, actor=current_user)
    db.session.commit()
    flash(_("Seats of %(clinic)s changed.", clinic=clinic.name), "success")
    return redirect(url_for("clinics.operator_clinics"))
