"""Object storage over boto3; the only module that builds S3 clients.

Keys follow `clinics/<clinic uuid>/studies/<study uuid>/<artifact>`: no names, dates or
DICOM UIDs ever appear in them. Presigned URLs are signed for the endpoint the browser
reaches (`S3_PUBLIC_ENDPOINT_URL`) and are never logged.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from portal.config import MAX_PRESIGNED_URL_TTL_S, Settings

logger = logging.getLogger(__name__)


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


class Storage:
    """A bucket reached through two S3 clients: one for the servers, one to sign browser URLs."""

    def __init__(self, settings: Settings):
        self.bucket = settings.s3_bucket
        self.presigned_ttl_s = min(settings.presigned_url_ttl_s, MAX_PRESIGNED_URL_TTL_S)
        self._client = self._build_client(settings, settings.s3_endpoint_url)
        self._signing_client = self._build_client(settings, settings.s3_public_endpoint_url)

    @staticmethod
    def _build_client(settings: Settings, endpoint_url: str):
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
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

    def upload_file(self, path: Path, key: str, *, content_type: str) -> int:
        """Upload the file at `path` under `key` in parts, and return its size in bytes."""
        self._client.upload_file(
            str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}
        )
        size_bytes = path.stat().st_size
        logger.info("stored object %s (%d bytes)", key, size_bytes)
        return size_bytes

    def download_file(self, key: str, path: Path) -> Path:
        self._client.download_file(self.bucket, key, str(path))
        return path

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

    def ping(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception:  # noqa: BLE001 - the health check reports any failure as "down"
            logger.warning("storage health check failed for bucket %s", self.bucket)
            return False
        return True
