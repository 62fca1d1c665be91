"""The guard that keeps patient data and secrets out of an event's details.

Details are flat: each value is text, a number, a boolean, None, or a list of those.
A key that names something that could identify a patient or grant access is dropped:
a name, a birth date, a patient ID, a token, a URL. So is a value that looks like a URL,
a credential or a DICOM person name. Dropped keys are listed under
`redacted_keys`, so a reader of the trail can tell that something was withheld.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

#: A key containing one of these words is dropped whatever its value.
FORBIDDEN_KEY_WORDS = (
    "name",
    "patient",
    "birth",
    "dob",
    "accession",
    "token",
    "secret",
    "password",
    "credential",
    "url",
    "uri",
    "link",
    "path",
    "email",
)
#: Maximum length of a kept text value, because longer text is more likely free text.
MAX_TEXT_LENGTH = 200
#: Most entries of a list value.
MAX_LIST_LENGTH = 50
REDACTED_KEYS = "redacted_keys"

_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: URLs, API keys, JWTs and DICOM person names (family^given).
_SUSPICIOUS_VALUE = re.compile(r"://|^vzm_|^eyJ[A-Za-z0-9_-]+\.|\^|^bearer\s", re.IGNORECASE)


def _is_forbidden_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in FORBIDDEN_KEY_WORDS)


def _is_safe_scalar(value) -> bool:
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, str):
        return len(value) <= MAX_TEXT_LENGTH and not _SUSPICIOUS_VALUE.search(value)
    return False


def _is_safe_value(value) -> bool:
    if isinstance(value, list | tuple):
        return len(value) <= MAX_LIST_LENGTH and all(_is_safe_scalar(item) for item in value)
    return _is_safe_scalar(value)


def clean_details(details: dict | None, *, action: str) -> dict:
    """Return the details an event may store: safe keys with safe values, lists as lists.

    Logs the names of dropped keys (never their values) at WARNING, because a dropped
    key is a bug in the caller.
    """
    if not details:
        return {}
    cleaned: dict = {}
    redacted: list[str] = []
    for key, value in details.items():
        key_text = str(key)
        if not _KEY_PATTERN.match(key_text):
            # A key of unexpected shape could itself be data, so even its name is withheld.
            redacted.append("invalid_key")
            continue
        if key_text == REDACTED_KEYS or _is_forbidden_key(key_text) or not _is_safe_value(value):
            redacted.append(key_text)
            continue
        cleaned[key_text] = list(value) if isinstance(value, list | tuple) else value
    if redacted:
        logger.warning("audit event %s: dropped details keys %s", action, sorted(redacted))
        cleaned[REDACTED_KEYS] = sorted(set(redacted))
    return cleaned
