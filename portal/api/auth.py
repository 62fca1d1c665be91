"""Authentication of JSON API requests: `Authorization: Bearer <API key or access token>`.

A token that starts with `vzm_` is a clinic API key; anything else must be an access
token of the configured identity provider (see `portal.auth.tokens`). Cookies are never
accepted here, so a page's session cannot be replayed against the API.
"""

from __future__ import annotations

import functools
import logging

from flask import current_app, g, request

from portal.auth.rate_limits import api_rate_limit
from portal.auth.services import api_membership_for_token
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


def api_key_required(view):
    """Authenticate the request and set `g.clinic`, and `g.api_key` or `g.api_user`.

    Raises a 401 error for a missing or invalid credential and a 403 error for a valid access
    token of a user without an active membership. Past the rate limit of the key or user,
    Flask-Limiter raises a 429 error.
    """
    limited_view = api_rate_limit(view)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        if token is None:
            logger.info("API request to %s rejected: no Bearer credential", request.path)
            raise Unauthorized()
        if token.startswith(API_KEY_PREFIX):
            api_key = authenticate_api_key(token)
            if api_key is None:
                logger.info("API request to %s rejected: invalid API key", request.path)
                raise Unauthorized()
            g.api_key, g.api_user, g.clinic = api_key, None, api_key.clinic
            g.rate_limit_key = f"api-key:{api_key.id}"
        else:
            membership = api_membership_for_token(
                token, app=current_app, clinic_id=request.headers.get("X-Clinic-ID")
            )
            g.api_key, g.api_user, g.clinic = None, membership.user, membership.clinic
            g.log_user_id = str(membership.user_id)
            g.rate_limit_key = f"user:{membership.user_id}"
        db.session.commit()
        return limited_view(*args, **kwargs)

    return wrapper
