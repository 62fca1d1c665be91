"""Every S3 write requests server-side encryption (S3_SSE, S3_SSE_KMS_KEY_ID).

`rclone serve s3` (the test server) accepts the headers and returns them on HEAD, but
it keeps objects unencrypted, so the tests also read the headers of each request that
botocore sends: PutObject, CreateMultipartUpload and CopyObject.
"""

from __future__ import annotations

import dataclasses

import pytest

from portal.storage import Storage

SSE_HEADER = "x-amz-server-side-encryption"
KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
#: boto3 switches to a multipart upload at 8 MiB by default (TransferConfig).
MULTIPART_BYTES = 9 * 1024 * 1024


def recording_storage(settings, **changes) -> tuple[Storage, list[tuple[str, dict]]]:
    """Build a Storage and record (operation, headers) of every request its client sends."""
    storage = Storage(dataclasses.replace(settings, **changes))
    sent = []

    def record(request, event_name, **kwargs):
        # The event is named "before-send.s3.<Operation>".
        sent.append((event_name.rsplit(".", 1)[-1], dict(request.headers)))

    storage._client.meta.events.register("before-send.s3", record)
    return storage, sent


def writes(sent, operation):
    return [headers for name, headers in sent if name == operation]


def header(headers: dict, name: str):
    for key, value in headers.items():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


@pytest.mark.parametrize(
    ("sse", "key_id"), [("AES256", ""), ("aws:kms", ""), ("aws:kms", "alias/portal-data")]
)
def test_every_write_requests_encryption(settings, tmp_path, sse, key_id):
    storage, sent = recording_storage(settings, s3_sse=sse, s3_sse_kms_key_id=key_id)
    small = tmp_path / "small.bin"
    small.write_bytes(b"\1" * 1000)
    large = tmp_path / "large.bin"
    large.write_bytes(b"\2" * MULTIPART_BYTES)

    storage.publish_file(small, f"clinics/c/studies/s/{sse}-small", content_type="text/plain")
    storage.upload_file(large, f"clinics/c/studies/s/{sse}-large", content_type="text/plain")
    storage.put_bytes(f"audit/c/heads/{sse}.json", b"{}", content_type="application/json")

    for operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        requests = writes(sent, operation)
        assert requests, f"no {operation} request was sent"
        for headers in requests:
            assert header(headers, SSE_HEADER) == sse, operation
            assert header(headers, KMS_KEY_HEADER) == (key_id or None), operation
    head = storage._client.head_object(
        Bucket=storage.bucket, Key=f"clinics/c/studies/s/{sse}-small"
    )
    assert head.get("ServerSideEncryption") == sse


def test_no_encryption_header_by_default(settings, tmp_path):
    storage, sent = recording_storage(settings)
    path = tmp_path / "small.bin"
    path.write_bytes(b"\1" * 10)
    storage.publish_file(path, "clinics/c/studies/s/plain", content_type="text/plain")
    assert writes(sent, "PutObject")
    assert all(header(headers, SSE_HEADER) is None for _name, headers in sent)
