"""The language of the current request, as the catalogue and category names spell it."""

from flask_babel import get_locale


def request_locale() -> str:
    """Return the request's locale (`pt_BR` or `en`), `pt_BR` when none is selected."""
    return str(get_locale() or "pt_BR")
