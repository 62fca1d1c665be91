"""Rate limits on sign-in and the JSON API (Flask-Limiter; Redis when REDIS_URL is set).

Over the limit, Flask-Limiter raises a 429 and adds `Retry-After`; the error handlers
render it as a page or as problem+json.
"""

from __future__ import annotations

from flask import current_app, g

from portal.extensions import limiter


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
# NOTE: the address is `request.remote_addr`. Behind a load balancer that is the balancer's
# address unless the app is wrapped in werkzeug's ProxyFix, which this code does not do.
sign_in_rate_limit = limiter.shared_limit(lambda: _settings().rate_limit_sign_in, scope="sign-in")
