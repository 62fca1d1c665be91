"""Throw-away PostgreSQL databases on the machine's server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PostgresDatabase:
    """A database with two roles, as in production."""

    #: The application's role: it owns nothing, so row-level security applies to it.
    app_url: str
    #: The tables' owner, which runs the migrations.
    owner_url: str


@contextlib.contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, and drop it afterwards."""
    with temporary_postgres_database_with_app_role() as database:
        yield database.owner_url


@contextlib.contextmanager
def temporary_postgres_database_with_app_role() -> Iterator[PostgresDatabase]:
    """Create an empty database and a login role that owns nothing; drop both afterwards."""
    import psycopg

    token = secrets.token_hex(6)
    name = "portal_test_" + token
    app_role = "portal_app_" + token
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        connection.execute(f'CREATE ROLE "{app_role}" LOGIN NOSUPERUSER NOBYPASSRLS')
    try:
        yield PostgresDatabase(
            app_url=f"postgresql+psycopg://{app_role}@127.0.0.1:5432/{name}",
            owner_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        )
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'DROP ROLE IF EXISTS "{app_role}"')
