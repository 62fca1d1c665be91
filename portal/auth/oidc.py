"""The OIDC client: Cognito's hosted UI in production, any OIDC provider by issuer URL."""

from __future__ import annotations

from urllib.parse import urlencode

from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app

from portal.config import Settings

PROVIDER_NAME = "idp"
EXTENSION_KEY = "portal_oidc_client"


def register_provider(app: Flask, settings: Settings) -> None:
    """Register the identity provider from its discovery document (read on first use).

    Each app gets its own registry: authlib caches a client by name for the life of a
    registry, so a shared one would keep the first app's issuer for every later app.
    """
    if not settings.issuer:
        return
    registry = OAuth(app)
    app.extensions[EXTENSION_KEY] = registry.register(
        PROVIDER_NAME,
        client_id=settings.cognito_client_id,
        client_secret=settings.cognito_client_secret or None,
        server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )


def provider():
    """Return the current app's OIDC client, or None when no issuer is configured."""
    return current_app.extensions.get(EXTENSION_KEY)


def provider_logout_url(settings: Settings, *, return_to: str) -> str | None:
    """Return the URL that ends the provider's session and comes back to `return_to`.

    Cognito's hosted UI has `/logout?client_id=...&logout_uri=...`; other providers
    advertise `end_session_endpoint` for RP-initiated logout.
    """
    if settings.cognito_domain:
        query = urlencode({"client_id": settings.cognito_client_id, "logout_uri": return_to})
        return f"{settings.cognito_domain}/logout?{query}"
    client = provider()
    if client is None:
        return None
    metadata = client.load_server_metadata()
    endpoint = metadata.get("end_session_endpoint")
    if not endpoint:
        return None
    query = urlencode(
        {"client_id": settings.cognito_client_id, "post_logout_redirect_uri": return_to}
    )
    return f"{endpoint}?{query}"
