"""The Huey instance: RedisHuey when REDIS_URL is set, SqliteHuey otherwise.

Huey's task decorators need the instance at import time, so it is built from the
environment here; every entry point loads `.env` before importing this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey

from portal.config import Settings


def build_huey(settings: Settings, *, name: str = "portal", immediate: bool = False) -> Huey:
    if settings.redis_url:
        return RedisHuey(name, url=settings.redis_url, immediate=immediate)
    Path(settings.huey_sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=settings.huey_sqlite_path, immediate=immediate)


huey = build_huey(
    Settings.from_env(),
    # A separate name keeps test queues apart from a developer's portal on the same Redis.
    name=os.environ.get("HUEY_NAME", "portal"),
    immediate=os.environ.get("HUEY_IMMEDIATE", "").lower() in ("1", "true", "yes"),
)
