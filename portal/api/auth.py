"""Authentication of JSON API requests: `Authorization: Bearer <API key or access token>`.

Cookies are never accepted here, so a page's session cannot be replayed against the API.
"""

from __future__ import annotations

import functools
import logging

from flask import g, request

from portal.api.principal import (
    CLINIC_HEADER,
    Principal,
    principal_for_api_key,
    principal_for_user,
    user_from_access_token,
)
from portal.clinics.services import authenticate_api_key
from portal.errors import Unauthorized
from portal.extensions import db

logger = logging.getLogger(__name__)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _space, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_request() -> Principal:
    """Return the request's principal; raise Unauthorized without a valid credential."""
    token = bearer_token()
    if token:
        api_key = authenticate_api_key(token)
        if api_key is not None:
            return principal_for_api_key(api_key)
        user = user_from_access_token(token)
        if user is not None:
            return principal_for_user(user, request.headers.get(CLINIC_HEADER))
    logger.info("API request to %s rejected: missing or invalid credential", request.path)
    raise Unauthorized()


def api_key_required(view):
    """Authenticate the caller and set `g.principal`, `g.clinic` and `g.api_key`.

    The name is kept from when only API keys were accepted; a user's access token is
    accepted too when a verifier is registered (see `portal.api.principal`).
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        principal = authenticate_request()
        db.session.commit()
        g.principal = principal
        g.clinic = principal.clinic
        g.api_key = principal.api_key
        if principal.user is not None:
            g.log_user_id = str(principal.user.id)
        return view(*args, **kwargs)

    return wrapper
