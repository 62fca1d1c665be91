"""Security headers on every response: Content Security Policy, framing, sniffing, referrer, HSTS.

The policy allows scripts, styles and fonts from the portal only, with no inline code.
The viewer is the one page that reaches another origin: NiiVue fetches the NIfTI volumes
from presigned S3 URLs, so the S3 endpoint the browser uses is allowed in `connect-src`.
NiiVue 0.69 draws with WebGL2 (no CSP directive applies), loads its font atlas from a
`data:` image and makes `blob:` URLs for screenshots, hence `data:` and `blob:` in
`img-src`. The browser tests fail on any CSP violation the viewer reports.

NOTE: NiiVue's WebAssembly decoders would need `'wasm-unsafe-eval'` in `script-src`. The
viewer loads only NIfTI files, which do not use them, so the policy leaves it out.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask

from portal.config import Settings

HSTS_VALUE = "max-age=31536000; includeSubDomains"


def origin_of(url: str) -> str | None:
    """Return `scheme://host[:port]` of an absolute URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def s3_origin(settings: Settings) -> str:
    """Return the origin the browser fetches presigned URLs from.

    Without an endpoint setting the portal uses AWS S3 itself, whose presigned URLs are
    virtual-hosted: `https://<bucket>.s3.<region>.amazonaws.com`.
    """
    if settings.s3_public_endpoint_url:
        return origin_of(settings.s3_public_endpoint_url) or ""
    return f"https://{settings.s3_bucket}.s3.{settings.aws_region}.amazonaws.com"


def content_security_policy(settings: Settings) -> str:
    """Build the portal's Content-Security-Policy header value."""
    connect_sources = ["'self'", s3_origin(settings)]
    # A form post to /auth/logout is redirected to the provider's logout endpoint, and
    # Chromium applies form-action to the redirect target as well.
    form_targets = ["'self'"]
    for url in (settings.cognito_domain, settings.issuer):
        origin = origin_of(url) if url else None
        if origin and origin not in form_targets:
            form_targets.append(origin)
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": [source for source in connect_sources if source],
        "worker-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": form_targets,
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def install_security_headers(app: Flask, settings: Settings) -> None:
    """Add the security headers to every response, error pages and redirects included."""
    policy = content_security_policy(settings)

    @app.after_request
    def add_security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", policy)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if settings.is_production:
            headers.setdefault("Strict-Transport-Security", HSTS_VALUE)
        return response
