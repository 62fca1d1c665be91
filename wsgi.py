"""The WSGI entry point: `.env` first, then the app."""

from dotenv import load_dotenv

load_dotenv()

from portal.app import create_app  # noqa: E402 - settings must see .env

app = create_app()
