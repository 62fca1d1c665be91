"""The clinic a signed-in user acts in, loaded from the database on every request."""

from __future__ import annotations

import functools
import uuid

from flask import g, redirect, request, session, url_for
from flask_login import current_user

from portal.clinics.models import Clinic, Membership, MembershipStatus

SESSION_CLINIC_KEY = "clinic_id"


def current_membership() -> Membership | None:
    """Return the active membership of the current clinic, falling back to the first one."""
    if not current_user.is_authenticated:
        return None
    memberships = current_user.active_memberships()
    if not memberships:
        return None
    chosen = session.get(SESSION_CLINIC_KEY)
    for membership in memberships:
        if str(membership.clinic_id) == chosen:
            return membership
    membership = sorted(memberships, key=lambda m: m.created_at)[0]
    session[SESSION_CLINIC_KEY] = str(membership.clinic_id)
    return membership


def clinic_member_required(view):
    """Require a signed-in user with an active membership; set `g.clinic` and `g.membership`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        membership = current_membership()
        if membership is None:
            return redirect(url_for("auth.no_clinic"))
        g.membership = membership
        g.clinic = membership.clinic
        return view(*args, **kwargs)

    return wrapper


def switch_clinic(clinic_id: uuid.UUID) -> Clinic | None:
    for membership in current_user.active_memberships():
        if membership.clinic_id == clinic_id and membership.status == MembershipStatus.ACTIVE:
            session[SESSION_CLINIC_KEY] = str(clinic_id)
            return membership.clinic
    return None
