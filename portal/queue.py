"""The Huey instance: RedisHuey when REDIS_URL is set, SqliteHuey otherwise.

Huey's task decorators need the instance at import time, so it is built from the
environment here; every entry point loads `.env` before importing this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey

from portal.config import Settings


def build_huey(settings: Settings, *, immediate: bool = False) -> Huey:
    if settings.redis_url:
        return RedisHuey("portal", url=settings.redis_url, immediate=immediate)
    Path(settings.huey_sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("portal", filename=settings.huey_sqlite_path, immediate=immediate)


huey = build_huey(
    Settings.from_env(),
    immediate=os.environ.get("HUEY_IMMEDIATE", "").lower() in ("1", "true", "yes"),
)
