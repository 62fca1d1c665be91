"""A real SqliteHuey queue holding given task messages, for tests of code that reads queues."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from huey import Huey

from portal.config import Settings
from portal.queue import build_huey


def queue_with_messages(
    path: Path, kwargs_of_tasks: list[dict], *, forged: int = 0, secret_key: str = "k" * 40
) -> Huey:
    """Return a queue at `path` holding one pending task per kwargs dict.

    `forged` more messages are signed with another key, as a queue file shared with a
    portal that has a different SECRET_KEY would hold them.
    """
    settings = Settings(secret_key=secret_key, huey_sqlite_path=str(path))
    queue = build_huey(settings)

    @queue.task(name="step")
    def step(**kwargs):
        return kwargs

    for kwargs in kwargs_of_tasks:
        step(**kwargs)
    if forged:
        other = build_huey(dataclasses.replace(settings, secret_key="z" * 40))

        @other.task(name="step")
        def forged_step(**kwargs):
            return kwargs

        for number in range(forged):
            forged_step(attempt_id=f"forged-{number}", endpoint_id=f"forged-{number}")
    return queue
