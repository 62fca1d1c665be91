"""Object storage over boto3; the only module that builds S3 clients.

Keys follow `clinics/<clinic uuid>/studies/<study uuid>/<artifact>`: no names, dates or
DICOM UIDs ever appear in them. Presigned URLs are signed for the endpoint the browser
reaches (`S3_PUBLIC_ENDPOINT_URL`) and are never logged.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from portal.config import MAX_PRESIGNED_URL_TTL_S, Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors after which the same call may succeed: the server is down, slow or overloaded.
TRANSIENT_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    S3UploadFailedError,
)
TRANSIENT_ERROR_CODES = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"}
)


class StorageUnavailable(Exception):
    """Object storage kept failing with transient errors for the whole retry window."""


def is_transient(error: Exception) -> bool:
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) in TRANSIENT_ERROR_CODES
    return False


def study_prefix(clinic_id: uuid.UUID, study_id: uuid.UUID) -> str:
    return f"clinics/{clinic_id}/studies/{study_id}"


def study_object_key(
    clinic_id: uuid.UUID,
    study_id: uuid.UUID,
    file_name: str,
    *,
    attempt_id: uuid.UUID | None = None,
) -> str:
    """Return the key of a study's object; attempt results sit under `attempts/<uuid>/`."""
    prefix = study_prefix(clinic_id, study_id)
    if attempt_id is not None:
        prefix = f"{prefix}/attempts/{attempt_id}"
    return f"{prefix}/{file_name}"


def encryption_args(settings: Settings) -> dict[str, str]:
    """Return the server-side encryption parameters of every write (S3_SSE, S3_SSE_KMS_KEY_ID).

    boto3 passes them to PutObject, CreateMultipartUpload and CopyObject alike.
    """
    if not settings.s3_sse:
        return {}
    args = {"ServerSideEncryption": settings.s3_sse}
    if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
        args["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
    return args


class Storage:
    """A bucket reached through two S3 clients: one for the servers, one to sign browser URLs."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.bucket = settings.s3_bucket
        self.retry_window_s = settings.storage_retry_window_s
        self.presigned_ttl_s = min(settings.presigned_url_ttl_s, MAX_PRESIGNED_URL_TTL_S)
        self._client = self._build_client(settings, settings.s3_endpoint_url)
        self._signing_client = self._build_client(settings, settings.s3_public_endpoint_url)
        self.encryption_args = encryption_args(settings)

    def _quick_client(self, timeout_s: float):
        # No retries and short timeouts, so a health check returns in about `timeout_s`.
        return self._build_client(
            self._settings,
            self._settings.s3_endpoint_url,
            timeout_s=timeout_s,
            max_attempts=1,
        )

    @staticmethod
    def _build_client(
        settings: Settings,
        endpoint_url: str,
        *,
        timeout_s: float | None = None,
        max_attempts: int = 5,
    ):
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=timeout_s or 5,
            read_timeout=timeout_s or 60,
        )
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id or None,
            aws_secret_access_key=settings.aws_secret_access_key or None,
            config=config,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (development servers only need this)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            logger.info("creating bucket %s", self.bucket)
            self._client.create_bucket(Bucket=self.bucket)

    def retrying(self, operation: Callable[[], T], *, what: str) -> T:
        """Run `operation`, retrying transient errors with backoff for `retry_window_s`.

        boto3's own retries cover a few seconds; this covers a storage server that is
        down for a minute or two. Raises StorageUnavailable when the window runs out.
        """
        deadline = time.monotonic() + self.retry_window_s
        delay_s = 0.5
        failures = 0
        while True:
            try:
                return operation()
            except Exception as error:  # noqa: BLE001 - narrowed by is_transient below
                if not is_transient(error):
                    raise
                failures += 1
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    logger.error("storage %s failed %d times; giving up", what, failures)
                    raise StorageUnavailable(
                        f"storage {what} failed: {type(error).__name__}"
                    ) from error
                logger.warning(
                    "storage %s failed (%s); retry %d in %.1f s",
                    what,
                    type(error).__name__,
                    failures,
                    delay_s,
                )
                time.sleep(min(random.uniform(delay_s / 2, delay_s), remaining_s))
                delay_s = min(delay_s * 2, 10.0)

    def upload_file(self, path: Path, key: str, *, content_type: str) -> int:
        """Upload the file at `path` under `key` in parts, and return its size in bytes."""
        self.retrying(
            lambda: self._client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type, **self.encryption_args},
            ),
            what="upload",
        )
        size_bytes = path.stat().st_size
        logger.info("stored object %s (%d bytes)", key, size_bytes)
        return size_bytes

    def publish_file(self, path: Path, key: str, *, content_type: str) -> int:
        """Upload `path` to a staging key, then copy it to `key` once it is complete.

        A reader of `key` never sees a partly written object, even on a server that
        exposes an upload in progress. Returns the size in bytes.
        """
        staging_key = f"{key.rsplit('/', 1)[0]}/staging/{uuid.uuid4().hex}"
        size_bytes = self.upload_file(path, staging_key, content_type=content_type)
        head = self.retrying(
            lambda: self._client.head_object(Bucket=self.bucket, Key=staging_key), what="head"
        )
        if int(head["ContentLength"]) != size_bytes:
            raise StorageUnavailable(f"staged object {staging_key} is incomplete")
        self.retrying(
            lambda: self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": staging_key},
                ContentType=content_type,
                MetadataDirective="REPLACE",
                **self.encryption_args,
            ),
            what="copy",
        )
        self.retrying(
            lambda: self._client.delete_object(Bucket=self.bucket, Key=staging_key),
            what="delete",
        )
        logger.info("published object %s (%d bytes)", key, size_bytes)
        return size_bytes

    def put_bytes(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        bucket: str | None = None,
        retain_until: datetime | None = None,
    ) -> None:
        """Store a small object whole in `bucket` (default: the portal's), retrying.

        With `retain_until`, the object is locked until then in Object Lock's compliance
        mode, which S3 accepts only in a bucket created with Object Lock enabled.
        """
        extra = {}
        if retain_until is not None:
            extra = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until}
        self.retrying(
            lambda: self._client.put_object(
                Bucket=bucket or self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                **extra,
                **self.encryption_args,
            ),
            what="put",
        )
        logger.info("stored object %s (%d bytes)", key, len(body))

    def read_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        response = self.retrying(
            lambda: self._client.get_object(Bucket=bucket or self.bucket, Key=key), what="get"
        )
        return response["Body"].read()

    def download_file(self, key: str, path: Path) -> Path:
        self.retrying(
            lambda: self._client.download_file(self.bucket, key, str(path)), what="download"
        )
        return path

    def delete_object(self, key: str) -> None:
        """Delete the object at `key`; a missing object is not an error."""
        self.retrying(
            lambda: self._client.delete_object(Bucket=self.bucket, Key=key), what="delete"
        )
        logger.info("deleted object %s", key)

    def list_keys(self, prefix: str, *, bucket: str | None = None) -> list[str]:
        """Return the key of every object under the folder `prefix` of `bucket`.

        `bucket` defaults to the portal's own.
        """
        keys = []
        paginator = self._client.get_paginator("list_objects_v2")
        folder = prefix.rstrip("/") + "/"
        for page in paginator.paginate(Bucket=bucket or self.bucket, Prefix=folder):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
            for item in page.get("Contents", []):
                self._client.delete_object(Bucket=self.bucket, Key=item["Key"])
                deleted += 1
        return deleted

    def presigned_get_url(self, key: str) -> tuple[str, datetime]:
        """Return a GET URL for `key` signed for the browser's endpoint, and its expiry."""
        expires_at = datetime.now(UTC) + timedelta(seconds=self.presigned_ttl_s)
        url = self._signing_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.presigned_ttl_s,
        )
        return url, expires_at

    def ping(self, *, timeout_s: float | None = None) -> bool:
        """Check that the bucket responds; `timeout_s` bounds the check with no retries."""
        client = self._client
        if timeout_s is not None:
            client = self._quick_client(timeout_s)
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception:  # noqa: BLE001 - the health check reports any failure as "down"
            logger.warning("storage health check failed for bucket %s", self.bucket)
            return False
        return True
