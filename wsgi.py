"""The WSGI entry point: `.env` first, then the app."""

import sys

from dotenv import load_dotenv

load_dotenv()

from portal.app import create_app  # noqa: E402 - settings must see .env
from portal.config import ConfigurationError  # noqa: E402

try:
    app = create_app()
except ConfigurationError as error:
    # One message that lists every problem, not a traceback, for gunicorn, the worker and
    # every other `flask --app wsgi` command.
    print(f"the portal cannot start: {error}", file=sys.stderr)
    raise SystemExit(2) from None
