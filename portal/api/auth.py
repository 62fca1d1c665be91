"""Authentication of JSON API requests: `Authorization: Bearer <API key or access token>`.

A token that starts with `vzm_` is a clinic API key; anything else must be an access
token of the configured identity provider (see `portal.auth.tokens`). Cookies are never
accepted here, so a page's session cannot be replayed against the API.
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
from portal.auth.rate_limits import api_rate_limit, count_rejected_api_credential
from portal.clinics.services import API_KEY_PREFIX, authenticate_api_key
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
    """Return the request's principal and set its rate-limit key.

    Raises a 401 error for a missing or invalid credential, a 403 error for a valid access
    token of a user without an active membership, and a 503 error when the identity
    provider's signing keys cannot be fetched.
    """
    token = bearer_token()
    if token is None:
        logger.info("API request to %s rejected: no Bearer credential", request.path)
        raise Unauthorized()
    if token.startswith(API_KEY_PREFIX):
        api_key = authenticate_api_key(token)
        if api_key is None:
            logger.info("API request to %s rejected: invalid API key", request.path)
            raise Unauthorized()
        g.rate_limit_key = f"api-key:{api_key.id}"
        return principal_for_api_key(api_key)
    user = user_from_access_token(token)
    if user is None:
        logger.info("API request to %s rejected: invalid access token", request.path)
        raise Unauthorized()
    g.rate_limit_key = f"user:{user.id}"
    return principal_for_user(user, request.headers.get(CLINIC_HEADER))


def api_key_required(view):
    """Authenticate the caller and set `g.principal`, `g.clinic`, `g.api_key`, `g.api_user`.

    The name is kept from when only API keys were accepted; a Cognito access token of an
    active member is accepted too. Past the rate limit of the key or user, Flask-Limiter
    raises a 429 error; past the limit of rejected credentials of the client address, so
    does `count_rejected_api_credential`.
    """
    limited_view = api_rate_limit(view)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            principal = authenticate_request()
        except Unauthorized:
            count_rejected_api_credential()
            raise
        db.session.commit()
        g.principal = principal
        g.clinic = principal.clinic
        g.api_key = principal.api_key
        g.api_user = principal.user
        if principal.user is not None:
            g.log_user_id = str(principal.user.id)
        return limited_view(*args, **kwargs)

    return wrapper
