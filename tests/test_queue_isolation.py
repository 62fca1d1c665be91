"""The test suite's queue never touches the queue of a developer's running portal."""

from __future__ import annotations

from huey import SqliteHuey

from tests.conftest import PROJECT_ROOT


def test_module_queue_is_not_the_developers():
    from portal.queue import huey

    assert huey.name != "portal"
    if isinstance(huey, SqliteHuey):
        queue_file = huey.storage.filename
        assert not queue_file.startswith(str(PROJECT_ROOT / "var")), queue_file
