"""The whole portal started for a test: every process on free 127.0.0.1 ports."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from scripts.devstack import Stack, run_flask
from tests.support.databases import temporary_postgres_database_with_app_role
from tests.support.servers import S3Server, check_s3_server, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def stack_env(data_dir: Path, *, database_url: str, redis_url: str = "", **overrides) -> dict:
    web_port, s3_port, idp_port, segmenter_port = (free_port() for _ in range(4))
    env = {
        "PORTAL_ENV": "development",
        "SECRET_KEY": secrets.token_hex(32),
        "WEB_PORT": str(web_port),
        "S3_PORT": str(s3_port),
        "IDP_PORT": str(idp_port),
        "SEGMENTER_PORT": str(segmenter_port),
        "PORTAL_BASE_URL": f"http://127.0.0.1:{web_port}",
        "DATA_DIR": str(data_dir),
        "HUEY_SQLITE_PATH": str(data_dir / "huey.sqlite3"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # A queue name of its own, so a developer's portal on the same Redis is not touched.
        "HUEY_NAME": "portal-test-" + secrets.token_hex(4),
        "S3_BUCKET": "vizier-e2e",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "e2e" + secrets.token_hex(8),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "OIDC_ISSUER": f"http://127.0.0.1:{idp_port}",
        "COGNITO_DOMAIN": f"http://127.0.0.1:{idp_port}",
        "COGNITO_CLIENT_ID": "vizier-med-portal",
        "COGNITO_CLIENT_SECRET": secrets.token_hex(24),
        "INFERENCE_API_URL": f"http://127.0.0.1:{segmenter_port}",
        "INFERENCE_API_TOKEN": secrets.token_hex(24),
    }
    env.update({name: str(value) for name, value in overrides.items()})
    return env


@contextlib.contextmanager
def running_stack(
    tmp_path: Path, *, backend: str = "sqlite", without: tuple[str, ...] = (), **overrides
) -> Iterator[Stack]:
    """Migrate a fresh database, start every process, and stop them all afterwards.

    `backend` is "sqlite" (SQLite and SqliteHuey, the embedded defaults) or "postgresql"
    (PostgreSQL and RedisHuey, as in production: the processes connect as a role that owns
    no table, and migrations run as the owner). Services named in `without` are not
    started, so a test can run its own (for example workers it kills).
    """
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with contextlib.ExitStack() as exits:
        if backend == "postgresql":
            database = exits.enter_context(temporary_postgres_database_with_app_role())
            database_url = database.app_url
            overrides.setdefault("DATABASE_MIGRATION_URL", database.owner_url)
            redis_url = REDIS_URL
        else:
            database_url = f"sqlite:///{data_dir / 'portal.sqlite3'}"
            redis_url = ""
        env = stack_env(data_dir, database_url=database_url, redis_url=redis_url, **overrides)
        run_flask(env, "db", "upgrade")
        stack = Stack(env=env, log_dir=tmp_path / "logs")
        stack.services = [service for service in stack.services if service.name not in without]
        try:
            stack.start()
            check_s3_server(
                S3Server(
                    env["S3_ENDPOINT_URL"],
                    env["AWS_ACCESS_KEY_ID"],
                    env["AWS_SECRET_ACCESS_KEY"],
                    env["S3_BUCKET"],
                    data_dir / "s3",
                )
            )
            yield stack
        finally:
            stack.stop()
