"""Sign-in and API tokens: identities are linked to portal users by (issuer, sub)."""

from __future__ import annotations

import logging

from flask import Flask
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from portal.auth.tokens import InvalidAccessToken, KeysUnavailable, token_verifier
from portal.clinics.models import Identity, User
from portal.db_types import utcnow
from portal.errors import Forbidden, UserFacingError
from portal.extensions import db

logger = logging.getLogger(__name__)


def is_true_claim(value) -> bool:
    """Read a boolean claim: Cognito sends `email_verified` as the string "true"."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


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
        user.is_email_verified = is_true_claim(claims.get("email_verified"))
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


def user_for_access_token(token: str, *, app: Flask) -> User | None:
    """Return the portal user an access token belongs to, or None for an invalid token.

    Raises NoActiveMembership for a valid token whose identity the portal does not know
    (such a user has no membership anywhere), and IdentityProviderUnavailable when the
    signing keys cannot be fetched. Clinic and role come from the database afterwards.
    """
    verifier = token_verifier(app)
    if verifier is None:
        return None
    try:
        claims = verifier.verify(token)
    except InvalidAccessToken as error:
        logger.info("access token rejected: %s", error.reason)
        return None
    except KeysUnavailable:
        raise IdentityProviderUnavailable() from None
    identity = db.session.scalar(
        select(Identity).where(Identity.issuer == claims.issuer, Identity.subject == claims.subject)
    )
    if identity is None:
        logger.info("access token of an identity unknown to the portal rejected")
        raise NoActiveMembership()
    return identity.user
