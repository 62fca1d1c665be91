"""Codes stored in `WebhookDelivery.last_error`, with the text the history page shows."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from portal.webhooks import guard, transport

SECRET_UNREADABLE = "secret_unreadable"
HTTP_STATUS = "http_status"
REDIRECT_NOT_FOLLOWED = "redirect_not_followed"

DELIVERY_ERROR_TITLES = {
    guard.INVALID_URL: _l("The URL is invalid."),
    guard.HTTPS_REQUIRED: _l("The URL is not HTTPS."),
    guard.HOST_NOT_FOUND: _l("The host name could not be resolved."),
    guard.ADDRESS_NOT_ALLOWED: _l("The host resolved to an address that is not public."),
    transport.CONNECT_FAILED: _l("The connection failed or timed out."),
    transport.TIMED_OUT: _l("The endpoint did not respond in time."),
    transport.TLS_FAILED: _l("The TLS handshake or certificate check failed."),
    transport.INVALID_RESPONSE: _l(
        "The endpoint closed the connection or sent an invalid response."
    ),
    SECRET_UNREADABLE: _l(
        "The signing secret cannot be read: SECRET_KEY changed. Register the endpoint again."
    ),
    HTTP_STATUS: _l("The endpoint responded with an error status."),
    REDIRECT_NOT_FOLLOWED: _l("The endpoint responded with a redirect, which is not followed."),
}
