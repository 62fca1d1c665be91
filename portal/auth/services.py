"""Sign-in and API tokens: identities are linked to portal users by (issuer, sub)."""

from __future__ import annotations

import logging

from flask import Flask
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from portal.auth.tokens import InvalidAccessToken, KeysUnavailable, token_verifier
from portal.clinics.models import Identity, Membership, User
from portal.db_types import utcnow
from portal.errors import Forbidden, Unauthorized, UserFacingError
from portal.extensions import db

logger = logging.getLogger(__name__)


def user_from_claims(issuer: str, claims: dict) -> User:
    """Return the user of the identity (issuer, sub), creating both on first sign-in.

    E-mail and name are refreshed from the claims but never used to find the user: an
    e-mail can be reassigned at the provider, a (issuer, sub) pair cannot.
    """
    subject = str(claims["sub"])
    identity = db.session.scalar(
        select(Identity).where(Identity.issuer == issuer, Identity.subject == subject)
    )
    if identity is None:
        user = User(email=str(claims.get("email", "")), display_name=str(claims.get("name", "")))
        identity = Identity(issuer=issuer, subject=subject, user=user)
        db.session.add(identity)
        db.session.flush()
        logger.info("created user %s for a new identity", user.id)
    user = identity.user
    if claims.get("email"):
        user.email = str(claims["email"])
    if claims.get("name"):
        user.display_name = str(claims["name"])
    user.last_login_at = utcnow()
    return user


class NoActiveMembership(Forbidden):
    code = "no_active_membership"
    message = _l("This account is not an active member of the clinic.")


class IdentityProviderUnavailable(UserFacingError):
    code = "identity_provider_unavailable"
    status = 503
    title = _l("Sign-in service unavailable")
    message = _l("The identity provider's keys could not be fetched. Try again in a minute.")


def api_membership_for_token(token: str, *, app: Flask, clinic_id: str | None) -> Membership:
    """Return the active membership an access token acts through.

    Raises Unauthorized for a token that fails validation, NoActiveMembership when its user
    is unknown here or has no active membership (in `clinic_id`, when given), and
    IdentityProviderUnavailable when the signing keys cannot be fetched.
    """
    verifier = token_verifier(app)
    if verifier is None:
        raise Unauthorized()
    try:
        claims = verifier.verify(token)
    except InvalidAccessToken as error:
        logger.info("access token rejected: %s", error.reason)
        raise Unauthorized() from None
    except KeysUnavailable:
        raise IdentityProviderUnavailable() from None

    identity = db.session.scalar(
        select(Identity).where(Identity.issuer == claims.issuer, Identity.subject == claims.subject)
    )
    memberships = identity.user.active_memberships() if identity is not None else []
    if clinic_id:
        memberships = [m for m in memberships if str(m.clinic_id) == clinic_id.strip()]
    if not memberships:
        logger.info("access token of a user without an active membership rejected")
        raise NoActiveMembership()
    return min(memberships, key=lambda membership: membership.created_at)
