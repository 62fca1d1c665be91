"""The JSON API of users, clinics and members, on the paths integrations already call."""

from __future__ import annotations

import functools

from flask import Blueprint, current_app, g, jsonify, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from portal.api import schemas
from portal.api.auth import api_key_required
from portal.api.openapi import AUTHENTICATED, AUTHENTICATED_ERRORS, api_spec, responses
from portal.clinics import invitations as invitation_service
from portal.clinics import members as member_service
from portal.clinics.models import Clinic, Invitation, Membership, User
from portal.clinics.services import seat_usage
from portal.errors import UserFacingError
from portal.extensions import csrf, db
from portal.tenancy import set_current_clinic

bp = Blueprint("api_clinics", __name__, url_prefix="/api")
csrf.exempt(bp)

#: Document and validate an authenticated operation on the clinic and its members.
clinics_operation = functools.partial(api_spec.validate, security=AUTHENTICATED, tags=["clinics"])

#: Errors of the operations only clinic admins may call: 403 `admin_required` for others,
#: 404 for a member that is not in the clinic, 409 for the seat limit or the last admin.
ADMIN_ERRORS = (*AUTHENTICATED_ERRORS, 409)


class InvalidJsonBody(UserFacingError):
    code = "invalid_body"
    status = 400
    title = _l("Invalid request body")
    message = _l("Send a JSON object with the fields %(fields)s.")


def validated_json(model: type[schemas.RequestModel]):
    """Validate the JSON body against `model`.

    SpecTree validates JSON bodies of POST requests itself; DELETE bodies it skips, and
    a body that is not JSON at all reaches the view unvalidated.
    """
    from pydantic import ValidationError

    from portal.api.openapi import ValidationFailed, field_errors

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidJsonBody(fields=", ".join(model.model_fields))
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise ValidationFailed(field_errors(error, location="body")) from None


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
@clinics_operation(
    resp=responses(HTTP_200=schemas.MemberList, errors=AUTHENTICATED_ERRORS),
)
def list_users():
    """List the active members of the caller's clinic."""
    return jsonify([member_json(m) for m in member_service.list_members(g.clinic)])


@bp.get("/auth/users/me/")
@api_key_required
@clinics_operation(
    resp=responses(HTTP_200=schemas.Me, errors=AUTHENTICATED_ERRORS),
)
def me():
    """Describe the caller: API key or user, current clinic, role and rights."""
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
@clinics_operation(
    resp=responses(HTTP_200=schemas.ClinicList, errors=AUTHENTICATED_ERRORS),
)
def list_clinics():
    """List the caller's clinics with their seat usage."""
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
@clinics_operation(
    json=schemas.InviteRequest,
    resp=responses(HTTP_201=schemas.Invitation, errors=ADMIN_ERRORS),
)
def invite():
    """Invite a person by e-mail as doctor or admin (clinic admins only).

    Returns 409 `seat_limit_reached` when the clinic has no free seat.
    """
    g.principal.require_admin()
    body = validated_json(schemas.InviteRequest)
    invitation = invitation_service.invite(
        g.clinic,
        email=body.email,
        role=body.role,
        locale=body.language or str(get_locale() or "pt_BR"),
        invited_by=g.principal.user,
        settings=current_app.config["PORTAL_SETTINGS"],
    )
    db.session.commit()
    return jsonify(invitation_json(invitation)), 201


@bp.get("/clinics/clinics/doctors/")
@api_key_required
@clinics_operation(
    resp=responses(HTTP_200=schemas.MemberList, errors=AUTHENTICATED_ERRORS),
)
def list_doctors():
    """List the clinic's members, removed ones included, with role and status."""
    members = member_service.list_members(g.clinic, include_removed=True)
    return jsonify([member_json(m) for m in members])


@bp.delete("/clinics/clinics/remove_doctor/")
@api_key_required
@clinics_operation(
    json=schemas.RemoveDoctorRequest,
    resp=responses(HTTP_200=schemas.Member, errors=ADMIN_ERRORS),
)
def remove_doctor():
    """Remove a member from the clinic (clinic admins only).

    Returns 409 `last_admin` for the clinic's last admin.
    """
    g.principal.require_admin()
    body = validated_json(schemas.RemoveDoctorRequest)
    membership = member_service.get_membership_of_user_or_404(g.clinic, body.user_id)
    member_service.remove_member(membership, actor=g.principal.user)
    db.session.commit()
    return jsonify(member_json(membership))
