"""The JSON API of users, clinics and members, on the paths integrations already call."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from portal.api.auth import api_key_required
from portal.clinics import invitations as invitation_service
from portal.clinics import members as member_service
from portal.clinics.models import Clinic, Invitation, Membership, User
from portal.clinics.services import seat_usage
from portal.errors import UserFacingError
from portal.extensions import csrf, db
from portal.tenancy import set_current_clinic

bp = Blueprint("api_clinics", __name__, url_prefix="/api")
csrf.exempt(bp)


class InvalidJsonBody(UserFacingError):
    code = "invalid_body"
    status = 400
    title = _l("Invalid request body")
    message = _l("Send a JSON object with the fields %(fields)s.")


def _json_body(*fields: str) -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidJsonBody(fields=", ".join(fields))
    return body


def user_json(user: User) -> dict:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.display_name,
        "last_sign_in_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def member_json(membership: Membership) -> dict:
    return user_json(membership.user) | {
        "membership_id": str(membership.id),
        "role": str(membership.role),
        "status": str(membership.status),
        "joined_at": membership.created_at.isoformat(),
    }


def clinic_json(clinic: Clinic, *, role: str | None = None) -> dict:
    usage = seat_usage(clinic)
    body = {
        "id": str(clinic.id),
        "name": clinic.name,
        "seats": {
            "limit": usage.limit,
            "used": usage.used,
            "members": usage.members,
            "pending_invitations": usage.pending_invitations,
        },
    }
    if role is not None:
        body["role"] = role
    return body


def invitation_json(invitation: Invitation) -> dict:
    return {
        "id": str(invitation.id),
        "email": invitation.email,
        "role": str(invitation.role),
        "status": str(invitation.status),
        "clinic_id": str(invitation.clinic_id),
        "created_at": invitation.created_at.isoformat(),
        "expires_at": invitation.expires_at.isoformat(),
    }


@bp.get("/auth/users/")
@api_key_required
def list_users():
    return jsonify([member_json(m) for m in member_service.list_members(g.clinic)])


@bp.get("/auth/users/me/")
@api_key_required
def me():
    principal = g.principal
    body = {
        "type": principal.kind,
        "current_clinic": {"id": str(principal.clinic.id), "name": principal.clinic.name},
        "role": str(principal.role),
        "rights": principal.rights,
    }
    if principal.api_key is not None:
        body["api_key"] = {"id": principal.api_key.key_id, "name": principal.api_key.name}
    if principal.user is not None:
        body["user"] = user_json(principal.user)
        body["memberships"] = [
            {"clinic_id": str(m.clinic_id), "clinic_name": m.clinic.name, "role": str(m.role)}
            for m in principal.memberships
        ]
    return jsonify(body)


@bp.get("/clinics/clinics/")
@api_key_required
def list_clinics():
    principal = g.principal
    if principal.user is None:
        return jsonify([clinic_json(principal.clinic)])
    # Each clinic's seats are counted inside that clinic's scope.
    clinics = []
    for membership in principal.memberships:
        set_current_clinic(membership.clinic_id)
        clinics.append(clinic_json(membership.clinic, role=str(membership.role)))
    set_current_clinic(principal.clinic.id)
    return jsonify(clinics)


@bp.post("/clinics/clinics/invite/")
@api_key_required
def invite():
    g.principal.require_admin()
    body = _json_body("email", "role")
    invitation = invitation_service.invite(
        g.clinic,
        email=str(body.get("email") or ""),
        role=str(body.get("role") or ""),
        locale=str(body.get("language") or str(get_locale() or "pt_BR")),
        invited_by=g.principal.user,
        settings=current_app.config["PORTAL_SETTINGS"],
    )
    db.session.commit()
    return jsonify(invitation_json(invitation)), 201


@bp.get("/clinics/clinics/doctors/")
@api_key_required
def list_doctors():
    members = member_service.list_members(g.clinic, include_removed=True)
    return jsonify([member_json(m) for m in members])


@bp.delete("/clinics/clinics/remove_doctor/")
@api_key_required
def remove_doctor():
    g.principal.require_admin()
    body = _json_body("user_id")
    membership = member_service.get_membership_of_user_or_404(g.clinic, body.get("user_id"))
    member_service.remove_member(membership, actor=g.principal.user)
    db.session.commit()
    return jsonify(member_json(membership))
