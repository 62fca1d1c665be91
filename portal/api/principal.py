"""The principal of an API request (a clinic API key or a user) and the clinic it acts in.

A clinic API key acts for its clinic with a doctor's rights. A user (signed in with an
access token) acts in one of their clinics: the one named by the `X-Clinic-ID` header,
or their only clinic when the header is absent. Role and clinic always come from the
portal database on each request, never from token claims, so a removed member loses
access at the next request whatever token they hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app
from flask_babel import lazy_gettext as _l

from portal.clinics.members import active_memberships_of
from portal.clinics.models import ApiKey, Clinic, Membership, Role, User
from portal.errors import Forbidden, NotFound, UserFacingError
from portal.tenancy import set_current_clinic

CLINIC_HEADER = "X-Clinic-ID"
#: Key of `app.extensions` holding a function that returns the User an access token
#: belongs to, or None. The sign-in package registers it; without it, only API keys work.
USER_TOKEN_VERIFIER = "portal_user_token_verifier"

UserTokenVerifier = Callable[[str], User | None]


class ClinicRequired(UserFacingError):
    code = "clinic_required"
    status = 400
    title = _l("Clinic not chosen")
    message = _l("You belong to several clinics: name one in the X-Clinic-ID header.")


class ClinicNotFound(UserFacingError):
    code = "clinic_not_found"
    status = 404
    title = _l("Clinic not found")
    message = _l("X-Clinic-ID must be the id of one of your clinics.")


class NoClinic(Forbidden):
    code = "no_active_membership"
    message = _l("This account is not an active member of the clinic.")


class AdminRequired(Forbidden):
    code = "admin_required"
    message = _l("Only the clinic's administrators may do this.")


@dataclass(frozen=True)
class Principal:
    """The caller of an API request and the clinic the request acts in."""

    clinic: Clinic
    role: Role
    user: User | None = None
    api_key: ApiKey | None = None
    #: The user's active memberships in every clinic; empty for an API key.
    memberships: tuple[Membership, ...] = field(default=())

    @property
    def kind(self) -> str:
        return "api_key" if self.api_key is not None else "user"

    @property
    def is_admin(self) -> bool:
        """Return whether the caller may manage members: a user with the admin role."""
        return self.user is not None and self.role == Role.ADMIN

    @property
    def rights(self) -> list[str]:
        rights = ["studies:read", "studies:write", "clinic:read", "members:read"]
        if self.is_admin:
            rights += ["members:write", "invitations:write"]
        return rights

    def require_admin(self) -> None:
        if not self.is_admin:
            raise AdminRequired()


def principal_for_api_key(api_key: ApiKey) -> Principal:
    set_current_clinic(api_key.clinic_id)
    return Principal(clinic=api_key.clinic, role=Role.DOCTOR, api_key=api_key)


def principal_for_user(user: User, clinic_header: str | None) -> Principal:
    """Choose the clinic a user's request acts in and narrow the database session to it."""
    memberships = active_memberships_of(user)
    if not memberships:
        if user.is_operator:
            # Operators manage clinics but never see their data; as on the pages, a
            # clinic's resources do not exist for them.
            raise NotFound()
        raise NoClinic()
    membership = choose_membership(memberships, clinic_header)
    set_current_clinic(membership.clinic_id)
    return Principal(
        clinic=membership.clinic,
        role=membership.role,
        user=user,
        memberships=tuple(memberships),
    )


def choose_membership(memberships: list[Membership], clinic_header: str | None) -> Membership:
    """Return the membership `X-Clinic-ID` names, or the only one when it is absent."""
    if clinic_header is None or not clinic_header.strip():
        if len(memberships) == 1:
            return memberships[0]
        raise ClinicRequired()
    try:
        clinic_id = uuid.UUID(clinic_header.strip())
    except ValueError:
        raise ClinicNotFound() from None
    for membership in memberships:
        if membership.clinic_id == clinic_id:
            return membership
    raise ClinicNotFound()


def user_from_access_token(token: str) -> User | None:
    """Return the user of a valid access token, None for an invalid one.

    Tests may register a stand-in verifier under USER_TOKEN_VERIFIER; otherwise the
    Cognito access-token verifier of `portal.auth` checks the token.
    """
    verifier: UserTokenVerifier | None = current_app.extensions.get(USER_TOKEN_VERIFIER)
    if verifier is not None:
        return verifier(token)
    from portal.auth.services import user_for_access_token

    return user_for_access_token(token, app=current_app)
