"""Validation of the access tokens that Cognito (or another OIDC provider) issues.

Cognito access tokens are RS256 JWTs with `iss` (the user pool's issuer), `token_use:
"access"`, `client_id` (the app client) and no `aud`. The signing keys come from the
pool's JWKS, found through the issuer's discovery document. Only those keys are trusted:
header parameters that point at other keys (`jku`, `x5u`, `jwk`, `x5c`) reject the token
and are never fetched.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import requests
from authlib.jose import JsonWebKey, JsonWebToken
from authlib.jose.errors import JoseError
from flask import Flask

from portal.config import JWKS_MIN_REFRESH_INTERVAL_S, Settings

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHM = "RS256"
#: Header parameters that name a key other than the pool's own. A token with one is rejected.
FORBIDDEN_HEADER_PARAMETERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
#: Keys are fetched again after this many seconds even when every `kid` is known, so a key
#: removed from the JWKS stops being trusted.
JWKS_MAX_AGE_S = 3600
#: After a failed fetch, the next attempt waits this long.
JWKS_RETRY_AFTER_FAILURE_S = 5
HTTP_TIMEOUT_S = (3.05, 5.0)
MAX_TOKEN_LENGTH = 8192
EXTENSION_KEY = "portal_token_verifier"


class InvalidAccessToken(Exception):
    """The token is not a valid access token of this portal. `reason` is a code for logs."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The provider's discovery document or JWKS could not be fetched."""


@dataclass(frozen=True)
class AccessTokenClaims:
    """The checked claims of an access token."""

    issuer: str
    subject: str
    client_id: str
    scopes: tuple[str, ...]
    username: str | None
    expires_at: int


def _b64url_json(segment: str) -> dict:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidAccessToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidAccessToken("malformed")
    return value


def read_unverified_header(token: str) -> dict:
    """Return the JOSE header of a compact JWS without checking anything else."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAccessToken("malformed")
    return _b64url_json(parts[0])


class JwksCache:
    """The provider's signing keys by `kid`, fetched on demand.

    An unknown `kid` triggers a new fetch at most once per `min_refresh_interval_s`, so a
    flood of tokens with made-up key ids costs at most one JWKS request per interval.
    """

    def __init__(
        self,
        issuer: str,
        *,
        min_refresh_interval_s: float = JWKS_MIN_REFRESH_INTERVAL_S,
        max_age_s: float = JWKS_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
        http: requests.Session | None = None,
    ):
        self.issuer = issuer
        self.min_refresh_interval_s = min_refresh_interval_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.http = http or requests.Session()
        self.fetch_count = 0
        self._keys: dict[str, dict] = {}
        self._jwks_uri: str | None = None
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> dict | None:
        """Fetch the JWKS when needed and return the JWK with this `kid`, or None.

        Raises KeysUnavailable when no keys were ever fetched and the fetch fails.
        """
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age_s
            unknown = kid not in self._keys
            may_refresh = self._fetched_at is None or (
                now - self._fetched_at >= self.min_refresh_interval_s
            )
            recently_failed = (
                self._failed_at is not None and now - self._failed_at < JWKS_RETRY_AFTER_FAILURE_S
            )
            if (stale or (unknown and may_refresh)) and not recently_failed:
                try:
                    self._refresh(now)
                except KeysUnavailable:
                    self._failed_at = now
                    if not self._keys:
                        raise
                    logger.warning("JWKS refresh failed; keeping %d cached keys", len(self._keys))
            elif recently_failed and not self._keys:
                raise KeysUnavailable("the identity provider's keys could not be fetched")
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        if self._jwks_uri is None:
            self._jwks_uri = self._discover_jwks_uri()
        document = self._get_json(self._jwks_uri)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise KeysUnavailable("the JWKS document has no 'keys' list")
        self._keys = {
            key["kid"]: key
            for key in keys
            if isinstance(key, dict) and isinstance(key.get("kid"), str) and _is_rs256_key(key)
        }
        self._fetched_at = now
        self._failed_at = None
        self.fetch_count += 1
        logger.info("fetched %d signing keys from the identity provider", len(self._keys))

    def _discover_jwks_uri(self) -> str:
        document = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
        if document.get("issuer") != self.issuer:
            raise KeysUnavailable("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeysUnavailable("the discovery document has no jwks_uri")
        return jwks_uri

    def _get_json(self, url: str) -> dict:
        try:
            response = self.http.get(url, timeout=HTTP_TIMEOUT_S, allow_redirects=False)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as error:
            logger.warning("fetching %s failed: %s", url, type(error).__name__)
            raise KeysUnavailable(f"fetching {url} failed") from error
        if not isinstance(document, dict):
            raise KeysUnavailable(f"{url} did not return a JSON object")
        return document


def _is_rs256_key(jwk: dict) -> bool:
    return (
        jwk.get("kty") == "RSA"
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", ALLOWED_ALGORITHM) == ALLOWED_ALGORITHM
    )


class AccessTokenVerifier:
    """Check access tokens of one issuer for a set of app clients."""

    def __init__(
        self,
        *,
        issuer: str,
        client_ids: Iterable[str],
        leeway_s: int,
        keys: JwksCache | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.issuer = issuer
        self.client_ids = frozenset(client_ids)
        self.leeway_s = leeway_s
        self.keys = keys or JwksCache(issuer)
        self.clock = clock
        self._jwt = JsonWebToken([ALLOWED_ALGORITHM])

    def verify(self, token: str) -> AccessTokenClaims:
        """Check the token and return its claims, or raise InvalidAccessToken with the reason.

        Raises KeysUnavailable when the signing keys cannot be fetched.
        """
        header = read_unverified_header(token)
        if FORBIDDEN_HEADER_PARAMETERS & header.keys():
            raise InvalidAccessToken("forbidden_header")
        if header.get("alg") != ALLOWED_ALGORITHM:
            raise InvalidAccessToken("algorithm_not_allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidAccessToken("missing_kid")
        jwk = self.keys.key_for(kid)
        if jwk is None:
            raise InvalidAccessToken("unknown_kid")

        try:
            claims = dict(self._jwt.decode(token, JsonWebKey.import_key(jwk)))
        except (JoseError, ValueError):
            raise InvalidAccessToken("bad_signature") from None
        return self._check_claims(claims)

    def _check_claims(self, claims: dict) -> AccessTokenClaims:
        if claims.get("iss") != self.issuer:
            raise InvalidAccessToken("wrong_issuer")
        if claims.get("token_use") != "access":
            raise InvalidAccessToken("wrong_token_use")
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or client_id not in self.client_ids:
            raise InvalidAccessToken("wrong_client")

        now = self.clock()
        expires_at = _numeric_claim(claims, "exp", required=True)
        issued_at = _numeric_claim(claims, "iat", required=True)
        not_before = _numeric_claim(claims, "nbf", required=False)
        if now > expires_at + self.leeway_s:
            raise InvalidAccessToken("expired")
        if issued_at > now + self.leeway_s:
            raise InvalidAccessToken("issued_in_future")
        if not_before is not None and not_before > now + self.leeway_s:
            raise InvalidAccessToken("not_yet_valid")

        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidAccessToken("missing_subject")
        scope = claims.get("scope", "")
        username = claims.get("username")
        return AccessTokenClaims(
            issuer=self.issuer,
            subject=subject,
            client_id=client_id,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            username=username if isinstance(username, str) else None,
            expires_at=int(expires_at),
        )


def _numeric_claim(claims: dict, name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # JSON booleans are ints in Python, so they are checked first and rejected.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAccessToken(f"invalid_{name}")
    return float(value)


def install_token_verifier(app: Flask, settings: Settings) -> None:
    """Build the app's access-token verifier. Discovery and JWKS are fetched on first use."""
    if not settings.issuer:
        return
    app.extensions[EXTENSION_KEY] = AccessTokenVerifier(
        issuer=settings.issuer,
        client_ids=settings.accepted_client_ids,
        leeway_s=settings.token_leeway_s,
    )


def token_verifier(app: Flask) -> AccessTokenVerifier | None:
    return app.extensions.get(EXTENSION_KEY)
