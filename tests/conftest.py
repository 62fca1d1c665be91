"""Fixtures shared by every test, and the guard that keeps tests on loopback."""

import atexit
import ipaddress
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DICOM_DIR = PROJECT_ROOT.parent / "shared" / "dicom"

# portal.queue builds its Huey from the environment when it is first imported. Without
# these, the tests would enqueue into var/huey.sqlite3 (or the "portal" queue on Redis),
# where the worker of a developer's running `make run` would take their tasks.
_QUEUE_DIR = tempfile.mkdtemp(prefix="portal-test-queue-")
atexit.register(shutil.rmtree, _QUEUE_DIR, ignore_errors=True)
os.environ["HUEY_SQLITE_PATH"] = str(Path(_QUEUE_DIR) / "huey.sqlite3")
os.environ["HUEY_NAME"] = "portal-test-" + secrets.token_hex(4)


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        # A host name other than localhost would need a DNS look-up, which is itself traffic.
        return False


@pytest.fixture(autouse=True)
def only_loopback_connections(monkeypatch):
    """Fail any connection from the test process to an address that is not loopback."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(
                f"test tried to connect to {address!r}; only loopback is allowed"
            )

    def guarded_connect(sock, address):
        check(sock, address)
        return original_connect(sock, address)

    def guarded_connect_ex(sock, address):
        check(sock, address)
        return original_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield


@pytest.fixture(scope="session")
def shared_dicom_dir() -> Path:
    """Return the folder of real DICOM studies, skipping when this machine lacks it."""
    if not SHARED_DICOM_DIR.is_dir():
        pytest.skip(f"real DICOM studies not found at {SHARED_DICOM_DIR}")
    return SHARED_DICOM_DIR
