"""Authentication of JSON API requests: `Authorization: Bearer <clinic API key>`.

Cookies are never accepted here, so a page's session cannot be replayed against the API.
"""

from __future__ import annotations

import functools
import logging

from flask import g, request

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


def api_key_required(view):
    """Authenticate the request's API key and set `g.clinic` and `g.api_key`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        api_key = authenticate_api_key(token) if token else None
        if api_key is None:
            logger.info("API request to %s rejected: missing or invalid key", request.path)
            raise Unauthorized()
        db.session.commit()
        g.api_key = api_key
        g.clinic = api_key.clinic
        return view(*args, **kwargs)

    return wrapper
