"""The local supervisor that `make run` uses: restarts a dead process, stops them all."""

import os
import signal
import sys

import pytest

from scripts.devstack import Service, Stack


def sleeper(tmp_path, name: str) -> Service:
    return Service(
        name,
        [sys.executable, "-c", "import time; time.sleep(120)"],
        0,
        dict(os.environ),
        tmp_path / f"{name}.log",
    )


@pytest.fixture
def stack(tmp_path):
    stack = Stack.__new__(Stack)
    stack.env = {}
    stack.log_dir = tmp_path
    stack.services = [sleeper(tmp_path, "worker"), sleeper(tmp_path, "web")]
    yield stack
    stack.stop()


def test_dead_process_is_restarted_alone(stack):
    stack.start()
    worker, web = stack.service("worker"), stack.service("web")
    first_worker_pid, web_pid = worker.process.pid, web.process.pid
    os.kill(first_worker_pid, signal.SIGKILL)
    worker.process.wait(timeout=10)

    assert stack.restart_dead() == ["worker"]
    assert worker.process.pid != first_worker_pid
    assert worker.process.poll() is None
    assert web.process.pid == web_pid
    assert worker.restarts == 1


def test_process_that_keeps_dying_stops_the_supervisor(stack):
    stack.start()
    worker = stack.service("worker")
    for _restart in range(2):
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        stack.restart_dead(max_restarts=2)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    with pytest.raises(RuntimeError, match="worker keeps exiting"):
        stack.restart_dead(max_restarts=2)


def test_stop_ends_every_process(stack):
    stack.start()
    processes = [service.process for service in stack.services]
    stack.stop()
    assert all(process.poll() is not None for process in processes)
