"""The portal's own storage retry window, against `rclone serve s3` behind a pausable proxy.

boto3 retries each call a few times within seconds. `Storage.retrying` adds a window of
`storage_retry_window_s` on top, so an outage that exhausts boto3's attempts still ends in
success if storage returns within the window, and in StorageUnavailable if it does not.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from portal.config import Settings
from portal.storage import Storage, StorageUnavailable
from tests.support.servers import S3Server, run_s3_server

#: Connection attempts boto3 makes per call: `max_attempts` in `Storage._build_client`.
BOTO3_ATTEMPTS_PER_CALL = 5


@pytest.fixture(autouse=True)
def no_boto3_backoff(monkeypatch):
    """Skip the sleep between boto3's attempts, up to 15 s per call, so tests take seconds.

    boto3 still makes all its attempts. The proxy counts them, so an outage is measured in
    attempts, not seconds. NOTE: this patches botocore's standard retry mode (1.40).
    """
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


class PausableProxy:
    """A loopback TCP proxy that closes every new connection while paused.

    A closed connection makes botocore raise ConnectionClosedError, a transient error, just
    as a storage server that restarts or drops requests would.
    """

    def __init__(self, upstream_port: int):
        self._upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._paused = False
        self._resume_after_rejections: int | None = None
        self.rejected_count = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self, *, resume_after_rejections: int | None = None) -> None:
        """Close new connections, until `resume_after_rejections` of them if given."""
        with self._lock:
            self._paused = True
            self._resume_after_rejections = resume_after_rejections
            self.rejected_count = 0

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            if self._reject_if_paused():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def _reject_if_paused(self) -> bool:
        with self._lock:
            if not self._paused:
                return False
            self.rejected_count += 1
            limit = self._resume_after_rejections
            if limit is not None and self.rejected_count >= limit:
                self._paused = False
            return True


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@contextmanager
def proxied_storage(tmp_path, *, retry_window_s: float) -> Iterator[tuple[Storage, PausableProxy]]:
    """Start an S3 server and a proxy in front of it, and yield a Storage that uses the proxy."""
    root = tmp_path / "s3"
    root.mkdir()
    with run_s3_server(root) as server:
        proxy = PausableProxy(int(server.endpoint_url.rsplit(":", 1)[1]))
        proxy.start()
        try:
            yield _storage_through(server, proxy, retry_window_s=retry_window_s), proxy
        finally:
            proxy.stop()


def _storage_through(server: S3Server, proxy: PausableProxy, *, retry_window_s: float) -> Storage:
    endpoint_url = f"http://127.0.0.1:{proxy.port}"
    settings = Settings(
        secret_key="test",
        s3_bucket=server.bucket,
        s3_endpoint_url=endpoint_url,
        s3_public_endpoint_url=endpoint_url,
        aws_region="us-east-1",
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        storage_retry_window_s=retry_window_s,
    )
    return Storage(settings)


def test_outage_within_window_succeeds(tmp_path, caplog):
    with proxied_storage(tmp_path, retry_window_s=120.0) as (storage, proxy):
        source = tmp_path / "mask.nii.gz"
        source.write_bytes(b"mask bytes " * 1000)
        key = "clinics/c/studies/s/mask.nii.gz"
        # One more rejection than boto3's attempts: the outage outlasts boto3's own retries
        # for the first call, so only the portal's retry window can carry the upload.
        proxy.pause(resume_after_rejections=BOTO3_ATTEMPTS_PER_CALL + 1)
        caplog.set_level(logging.WARNING, logger="portal.storage")

        started = time.monotonic()
        size_bytes = storage.publish_file(source, key, content_type="application/gzip")
        elapsed_s = time.monotonic() - started

        assert proxy.rejected_count == BOTO3_ATTEMPTS_PER_CALL + 1
        portal_retries = [r for r in caplog.records if "storage upload failed" in r.getMessage()]
        assert len(portal_retries) >= 1
        assert elapsed_s < storage.retry_window_s
        assert size_bytes == source.stat().st_size
        stored = storage._client.get_object(Bucket=storage.bucket, Key=key)["Body"].read()
        assert stored == source.read_bytes()


def test_outage_past_window_raises(tmp_path, caplog):
    with proxied_storage(tmp_path, retry_window_s=2.0) as (storage, proxy):
        source = tmp_path / "mask.nii.gz"
        source.write_bytes(b"mask bytes " * 1000)
        key = "clinics/c/studies/s/mask.nii.gz"
        proxy.pause()
        caplog.set_level(logging.WARNING, logger="portal.storage")

        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="storage upload failed"):
            storage.publish_file(source, key, content_type="application/gzip")
        elapsed_s = time.monotonic() - started

        assert elapsed_s >= storage.retry_window_s
        # The portal retried the whole boto3 call several times before the window ran out.
        portal_retries = [r for r in caplog.records if "storage upload failed" in r.getMessage()]
        assert len(portal_retries) >= 2
        assert proxy.rejected_count >= 2 * BOTO3_ATTEMPTS_PER_CALL
        assert any("giving up" in record.getMessage() for record in caplog.records)

        # Nothing was published, and storage works again once the outage ends.
        proxy.resume()
        listed = storage._client.list_objects_v2(Bucket=storage.bucket, Prefix="clinics/")
        assert listed.get("KeyCount", 0) == 0
        assert storage.ping(timeout_s=5) is True
