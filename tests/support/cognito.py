"""A stand-in for a Cognito user pool's public endpoints, and a minter of its tokens.

`serve_user_pool` serves the discovery document and the JWKS on a free 127.0.0.1 port at
Cognito's paths (`/<pool id>/.well-known/openid-configuration` and `.../jwks.json`) and
counts the requests. `TokenMinter` signs tokens with the pool's key in the shapes Cognito
issues, and can also build the malformed and forged tokens a validator must reject.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from authlib.jose import JsonWebKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

POOL_ID = "sa-east-1_TestPool1"
CLIENT_ID = "portal-web-client"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class SigningKey:
    """An RSA key pair with its key id."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def public_jwk(self) -> dict:
        """Return the public key as Cognito lists it in the JWKS."""
        public_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        jwk = JsonWebKey.import_key(public_pem, {"kty": "RSA"}).as_dict()
        return {
            "alg": "RS256",
            "e": jwk["e"],
            "kid": self.kid,
            "kty": "RSA",
            "n": jwk["n"],
            "use": "sig",
        }

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, signing_input: bytes) -> bytes:
        return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


@dataclass
class UserPool:
    """The running stand-in: its issuer, its keys and the requests it received."""

    issuer: str
    keys: list[SigningKey]
    requests: Counter

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"


def _discovery_document(issuer: str) -> dict:
    # The fields Cognito publishes; the hosted UI endpoints live on the pool's domain.
    domain = issuer.replace(f"/{POOL_ID}", "/hosted-ui")
    return {
        "authorization_endpoint": f"{domain}/oauth2/authorize",
        "id_token_signing_alg_values_supported": ["RS256"],
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code", "token"],
        "scopes_supported": ["openid", "email", "phone", "profile"],
        "subject_types_supported": ["public"],
        "token_endpoint": f"{domain}/oauth2/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "userinfo_endpoint": f"{domain}/oauth2/userInfo",
    }


@contextlib.contextmanager
def serve_user_pool(keys: list[SigningKey]) -> Iterator[UserPool]:
    """Serve discovery and JWKS for `keys` on 127.0.0.1; edit `pool.keys` to rotate them."""
    requests_seen: Counter = Counter()
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            requests_seen[self.path] += 1
            pool: UserPool = state["pool"]
            prefix = f"/{POOL_ID}/.well-known/"
            if self.path == prefix + "openid-configuration":
                body = _discovery_document(pool.issuer)
            elif self.path == prefix + "jwks.json":
                body = {"keys": [key.public_jwk() for key in pool.keys]}
            else:
                self.send_error(404)
                return
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    state["pool"] = UserPool(
        issuer=f"http://127.0.0.1:{port}/{POOL_ID}", keys=keys, requests=requests_seen
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["pool"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_counting_urls() -> Iterator[tuple[str, Counter]]:
    """Serve 404 for every path on 127.0.0.1 and count the requests; for `jku`/`x5u` checks."""
    seen: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen[self.path] += 1
            self.send_error(404)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class TokenMinter:
    """Build tokens of one pool: valid ones and every kind of bad one."""

    issuer: str
    key: SigningKey
    client_id: str = CLIENT_ID

    def access_claims(self, subject: str, **overrides) -> dict:
        """Return the claims of a Cognito access token; an override of None drops the claim."""
        now = int(time.time())
        claims = {
            "sub": subject,
            "iss": self.issuer,
            "client_id": self.client_id,
            "origin_jti": str(uuid.uuid4()),
            "event_id": str(uuid.uuid4()),
            "token_use": "access",
            "scope": "openid email profile",
            "auth_time": now,
            "exp": now + 3600,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": subject,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def id_claims(self, subject: str) -> dict:
        """Return the claims of a Cognito ID token: `aud` and `token_use: id`, no `client_id`."""
        now = int(time.time())
        return {
            "sub": subject,
            "aud": self.client_id,
            "email_verified": True,
            "token_use": "id",
            "auth_time": now,
            "iss": self.issuer,
            "cognito:username": subject,
            "exp": now + 3600,
            "iat": now,
            "email": "medica@example.com",
        }

    def sign(self, claims: dict, *, key: SigningKey | None = None, **header) -> str:
        """Return an RS256 JWS of `claims`; `header` adds or replaces header parameters."""
        key = key or self.key
        full_header = {"kid": key.kid, "alg": "RS256", **header}
        signing_input = f"{b64url_json(full_header)}.{b64url_json(claims)}".encode()
        return f"{signing_input.decode()}.{b64url(key.sign(signing_input))}"

    def unsigned(self, claims: dict) -> str:
        """Return a token with `alg: none` and an empty signature."""
        return f"{b64url_json({'alg': 'none', 'kid': self.key.kid})}.{b64url_json(claims)}."

    def hs256_with_public_key(self, claims: dict) -> str:
        """Return a token MAC'd with HS256 using the public key's PEM as the secret."""
        header = {"alg": "HS256", "kid": self.key.kid, "typ": "JWT"}
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}".encode()
        mac = hmac.new(self.key.public_pem(), signing_input, hashlib.sha256).digest()
        return f"{signing_input.decode()}.{b64url(mac)}"
