"""Throw-away PostgreSQL databases on the machine's server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, and drop it afterwards."""
    import psycopg

    name = "portal_test_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
