"""The worker's heartbeat file: the consumer touches it while healthy; a check reads its age.

Container health checks run `flask --app wsgi worker-health`, which fails once the file is
older than its limit. The consumer touches the file only after its worker threads and
scheduler are alive and the queue backend (Redis or the SQLite file) has responded, so a
worker that lost its queue or whose threads died turns unhealthy.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: Seconds between two touches of the heartbeat file.
HEARTBEAT_INTERVAL_S = 10.0
#: Default age beyond which `worker-health` reports the worker unhealthy.
DEFAULT_MAX_AGE_S = 60.0


def touch_heartbeat(path: str | os.PathLike) -> None:
    heartbeat = Path(path)
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()
    now = time.time()
    os.utime(heartbeat, (now, now))


def heartbeat_age_s(path: str | os.PathLike) -> float | None:
    """Return the seconds since the last touch, or None when the file does not exist."""
    try:
        return max(0.0, time.time() - Path(path).stat().st_mtime)
    except FileNotFoundError:
        return None


def check_heartbeat(path: str | os.PathLike, *, max_age_s: float) -> str | None:
    """Return why the worker is unhealthy, or None when its heartbeat is recent enough."""
    age_s = heartbeat_age_s(path)
    if age_s is None:
        return f"heartbeat file {path} not found: the worker has not started or cannot write it"
    if age_s > max_age_s:
        return f"heartbeat file {path} is {age_s:.0f} s old (limit {max_age_s:.0f} s)"
    return None
