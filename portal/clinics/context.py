"""The clinic a signed-in user acts in, loaded from the database on every request."""

from __future__ import annotations

import functools
import uuid

from flask import g, redirect, request, session, url_for
from flask_login import current_user

from portal.clinics.members import active_memberships_of
from portal.clinics.models import Clinic, Membership, Role
from portal.errors import Forbidden, NotFound
from portal.tenancy import set_current_clinic

SESSION_CLINIC_KEY = "clinic_id"


def current_membership() -> Membership | None:
    """Return the active membership of the session's clinic, falling back to the first one.

    Also stores every active membership in `g.memberships` for the clinic switcher.
    A membership removed since the last request is simply absent, so access ends there.
    """
    if not current_user.is_authenticated:
        return None
    memberships = active_memberships_of(current_user)
    g.memberships = memberships
    if not memberships:
        return None
    chosen = session.get(SESSION_CLINIC_KEY)
    for membership in memberships:
        if str(membership.clinic_id) == chosen:
            return membership
    membership = memberships[0]
    session[SESSION_CLINIC_KEY] = str(membership.clinic_id)
    return membership


def _enter_clinic():
    """Set `g.clinic` and `g.membership`; return a response when the user may not enter."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    membership = current_membership()
    if membership is None:
        if current_user.is_operator:
            # Operators manage clinics but never see their studies: a clinic page is
            # as absent to them as a page that does not exist.
            raise NotFound()
        return redirect(url_for("auth.no_clinic"))
    g.membership = membership
    g.clinic = membership.clinic
    set_current_clinic(membership.clinic_id)
    return None


def clinic_member_required(view):
    """Require a signed-in user with an active membership; set `g.clinic` and `g.membership`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        response = _enter_clinic()
        if response is not None:
            return response
        return view(*args, **kwargs)

    return wrapper


def clinic_admin_required(view):
    """Like `clinic_member_required`, and the member must be an admin of the clinic."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        response = _enter_clinic()
        if response is not None:
            return response
        if g.membership.role != Role.ADMIN:
            raise Forbidden()
        return view(*args, **kwargs)

    return wrapper


def switch_clinic(clinic_id: uuid.UUID | str) -> Clinic | None:
    """Make `clinic_id` the session's clinic if the user is an active member of it."""
    for membership in active_memberships_of(current_user):
        if str(membership.clinic_id) == str(clinic_id):
            session[SESSION_CLINIC_KEY] = str(membership.clinic_id)
            return membership.clinic
    return None
