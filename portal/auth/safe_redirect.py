"""Checks that keep redirect targets inside the portal."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


def safe_next_path(target: str | None) -> str | None:
    """Return `target` if it is a relative path of this site, else None.

    Rejects scheme-relative (`//host`), absolute URLs, backslashes (browsers read `/\\host`
    as `//host`), control characters, and the same tricks percent-encoded.
    """
    if not target:
        return None
    decoded = target
    for _round in range(3):
        decoded = unquote(decoded)
    for candidate in (target, decoded):
        if not candidate.startswith("/") or candidate.startswith("//"):
            return None
        if "\\" in candidate or any(ord(char) < 32 for char in candidate):
            return None
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return None
    return target
