"""Webhook secrets: generation, encryption at rest, and the signature of each delivery.

The README and the webhooks page document the signature scheme for receivers. Each
attempt carries the headers `Vizier-Webhook-Id` (the event id), `Vizier-Webhook-Timestamp`
(Unix seconds when the attempt was sent) and `Vizier-Webhook-Signature`. The signature
is `v1=` followed by the lowercase hex HMAC-SHA256 of `f"{id}.{timestamp}.{body}"`,
keyed with the endpoint's secret as UTF-8 bytes, where `body` is the raw request body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"
ID_HEADER = "Vizier-Webhook-Id"
TIMESTAMP_HEADER = "Vizier-Webhook-Timestamp"
SIGNATURE_HEADER = "Vizier-Webhook-Signature"
SIGNATURE_VERSION = "v1"
#: Keeps the encryption key of webhook secrets apart from other uses of SECRET_KEY.
_KEY_DERIVATION_INFO = b"portal.webhooks.secret-encryption"


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted, usually because SECRET_KEY changed."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_DERIVATION_INFO
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_secret(secret: str, *, secret_key: str) -> bytes:
    return _fernet(secret_key).encrypt(secret.encode())


def decrypt_secret(token: bytes, *, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(token).decode()
    except InvalidToken:
        raise SecretUnreadable("webhook secret cannot be decrypted with this SECRET_KEY") from None


def sign(secret: str, *, event_id: str, timestamp: int, body: bytes) -> str:
    """Return the signature header value for one delivery attempt."""
    message = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, *, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "VizierMed-Webhooks/1",
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, event_id=event_id, timestamp=timestamp, body=body),
    }
