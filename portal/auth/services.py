"""Sign-in: link the provider's identity to a portal user by (issuer, sub)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from portal.clinics.models import Identity, User
from portal.db_types import utcnow
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
