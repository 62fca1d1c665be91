"""Rate limits on sign-in and the JSON API (Flask-Limiter; Redis when REDIS_URL is set).

Over the limit, Flask-Limiter raises a 429 and adds `Retry-After`; the error handlers
render it as a page or as problem+json.
"""

from __future__ import annotations

import logging

from flask import current_app, g, request
from flask_babel import lazy_gettext as _l
from limits import parse_many

from portal.errors import UserFacingError
from portal.extensions import limiter

logger = logging.getLogger(__name__)


def _settings():
    return current_app.config["PORTAL_SETTINGS"]


def api_client_key() -> str:
    """Return the rate-limit bucket of an authenticated API request: its key or its user."""
    return g.rate_limit_key


#: One budget per API key or user, shared by every API endpoint. Apply it after
#: authentication, which sets `g.rate_limit_key`.
api_rate_limit = limiter.shared_limit(
    lambda: _settings().rate_limit_api, scope="api", key_func=api_client_key
)

#: One budget per client address for starting and finishing a sign-in. The default of 60
#: a minute lets about 30 people behind one clinic's NAT sign in within the same minute.
#: The address is the client's when PROXY_FIX_HOPS names the proxies in front of the app.
sign_in_rate_limit = limiter.shared_limit(lambda: _settings().rate_limit_sign_in, scope="sign-in")


class TooManyRejectedCredentials(UserFacingError):
    code = "too_many_rejected_credentials"
    status = 429
    title = _l("Too many requests")
    message = _l(
        "Too many API requests from this address came without a valid API key or access "
        "token. Check the credential, then try again in a minute."
    )


def count_rejected_api_credential() -> None:
    """Count an API request whose credential was missing or rejected, per client address.

    Past RATE_LIMIT_API_UNAUTHENTICATED it raises TooManyRejectedCredentials instead of
    the 401. A 429 is not audited, so a client retrying with a wrong key cannot flood the
    platform's audit chain. A valid credential from the same address is still accepted,
    because a request is counted here only after its credential was rejected.
    """
    if not limiter.enabled:
        return
    address = request.remote_addr or "unknown"
    for item in parse_many(_settings().rate_limit_api_unauthenticated):
        if not limiter.limiter.hit(item, "api-rejected-credential", address):
            logger.warning("API credentials from %s rejected past the limit %s", address, item)
            raise TooManyRejectedCredentials()
