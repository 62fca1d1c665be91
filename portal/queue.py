"""The Huey instance: RedisHuey when REDIS_URL is set, SqliteHuey otherwise.

Huey's task decorators need the instance at import time, so it is built from the
environment here; every entry point loads `.env` before importing this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey
from huey.serializer import SignedSerializer

from portal.config import Settings

#: Keeps task signatures apart from other uses of SECRET_KEY.
TASK_SIGNATURE_SALT = "portal.tasks"


def build_huey(settings: Settings, *, name: str = "portal", immediate: bool = False) -> Huey:
    """Build the queue; messages are signed with SECRET_KEY, so a forged one is dropped.

    The web app and the workers must share SECRET_KEY, which `.env` guarantees.
    """
    serializer = SignedSerializer(secret=settings.secret_key, salt=TASK_SIGNATURE_SALT)
    if settings.redis_url:
        return RedisHuey(name, url=settings.redis_url, immediate=immediate, serializer=serializer)
    Path(settings.huey_sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(
        name, filename=settings.huey_sqlite_path, immediate=immediate, serializer=serializer
    )


huey = build_huey(
    Settings.from_env(),
    # A separate name keeps test queues apart from a developer's portal on the same Redis.
    name=os.environ.get("HUEY_NAME", "portal"),
    immediate=os.environ.get("HUEY_IMMEDIATE", "").lower() in ("1", "true", "yes"),
)
