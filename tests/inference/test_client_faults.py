"""The inference client against a scripted server that misbehaves in one way per test."""

import io
import json
import logging
import pickle
import socket
import time

import numpy as np
import pytest

from portal.inference import InferenceClient, InferenceError, InferenceTimeout
from tests.inference.fake_server import Reply

JOB_ID = "job-1"
STATUS_PATH = f"/v1/jobs/{JOB_ID}"
RESULT_PATH = f"/v1/jobs/{JOB_ID}/result"
SHAPE_ZYX = (4, 6, 5)
TOKEN = "secret-token-for-fault-tests"
NPZ_TYPE = {"Content-Type": "application/octet-stream"}


def make_client(base_url: str, **options) -> InferenceClient:
    settings = {
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "job_timeout_s": 5.0,
        "poll_initial_s": 0.01,
        "poll_max_s": 0.05,
        "max_retries": 2,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
    }
    settings.update(options)
    return InferenceClient(base_url, TOKEN, **settings)


def status_reply(status: str, progress: int = 0, error=None) -> Reply:
    document = {"job_id": JOB_ID, "status": status, "progress": progress, "error": error}
    return Reply(200, json.dumps(document).encode())


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good_mask() -> np.ndarray:
    mask = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    mask[1:3, 2:4, 1:3] = 1
    mask[0, 0, 0] = 5
    return mask


def result_reply(**overrides) -> Reply:
    arrays = {"mask": good_mask(), "labels": np.array([1, 5], dtype=np.int32)}
    arrays.update(overrides)
    return Reply(200, npz_bytes(**arrays), NPZ_TYPE)


def fetch(fake_server, categories=(1, 5), **options):
    with make_client(fake_server.base_url, **options) as client:
        return client.fetch_result(JOB_ID, expected_shape_zyx=SHAPE_ZYX, categories=categories)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_503_then_success_retried(fake_server):
    fake_server.script(
        "GET", STATUS_PATH, Reply(503, b'{"code": "busy"}'), status_reply("running", 40)
    )
    with make_client(fake_server.base_url) as client:
        status = client.get_status(JOB_ID)

    assert status.status == "running"
    assert status.progress == 40
    assert fake_server.count("GET", STATUS_PATH) == 2


def test_persistent_503_unavailable(fake_server):
    fake_server.script("GET", STATUS_PATH, Reply(503, b"{}"))
    with make_client(fake_server.base_url, max_retries=2) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)

    assert caught.value.code == "inference_unavailable"
    assert fake_server.count("GET", STATUS_PATH) == 3


def test_429_waits_for_retry_after(fake_server):
    fake_server.script(
        "GET",
        STATUS_PATH,
        Reply(429, b'{"code": "rate_limited"}', {"Retry-After": "1"}),
        status_reply("queued"),
    )
    started = time.monotonic()
    with make_client(fake_server.base_url) as client:
        status = client.get_status(JOB_ID)
    elapsed_s = time.monotonic() - started

    assert status.status == "queued"
    assert fake_server.count("GET", STATUS_PATH) == 2
    # The backoff alone would wait at most retry_max_s = 0.05 s.
    assert elapsed_s >= 0.95


def test_submit_retry_resends_same_key(fake_server, tmp_path):
    npz_path = tmp_path / "volume.npz"
    npz_path.write_bytes(npz_bytes(image=np.zeros((2, 2, 2), np.float32)))
    fake_server.script(
        "POST",
        "/v1/jobs",
        Reply(502, b"bad gateway", {"Content-Type": "text/plain"}),
        Reply(202, json.dumps({"job_id": JOB_ID, "status": "queued"}).encode()),
    )
    with make_client(fake_server.base_url) as client:
        job_id = client.submit(npz_path, [1, 5], idempotency_key="study-7-attempt-1")

    posts = [seen for seen in fake_server.requests if seen.method == "POST"]
    assert job_id == JOB_ID
    assert len(posts) == 2
    assert [post.headers["Idempotency-Key"] for post in posts] == ["study-7-attempt-1"] * 2
    for post in posts:
        # Each attempt carries the whole file again, not the remains of a consumed stream.
        assert npz_path.read_bytes() in post.body
        assert b'name="categories"\r\n\r\n5\r\n' in post.body
    assert posts[1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_submit_sends_no_file_name(fake_server, tmp_path):
    npz_path = tmp_path / "SILVA^MARIA.npz"
    npz_path.write_bytes(npz_bytes(image=np.zeros((2, 2, 2), np.float32)))
    fake_server.script("POST", "/v1/jobs", Reply(202, b'{"job_id": "job-1", "status": "queued"}'))
    with make_client(fake_server.base_url) as client:
        client.submit(npz_path, [], idempotency_key="key-1")

    assert b"SILVA" not in fake_server.requests[0].body
    assert b'filename="volume.npz"' in fake_server.requests[0].body


def test_4xx_rejected_without_retry(fake_server):
    fake_server.script(
        "GET", STATUS_PATH, Reply(404, b'{"code": "job_not_found", "message": "no such job"}')
    )
    with make_client(fake_server.base_url) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)

    assert caught.value.code == "inference_rejected"
    assert caught.value.http_status == 404
    assert caught.value.provider_code == "job_not_found"
    assert fake_server.count("GET", STATUS_PATH) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'["a", "list"]',
        b'{"status": "done", "progress": 100, "error": null}',
        b'{"status": "running", "progress": 140, "error": null}',
        b'{"status": "running", "progress": true, "error": null}',
        b'{"status": "failed", "progress": 0, "error": "broken"}',
    ],
    ids=["not-json", "not-object", "unknown-status", "progress-over-100", "bool", "error-str"],
)
def test_invalid_status_bad_response(fake_server, body):
    fake_server.script("GET", STATUS_PATH, Reply(200, body))
    with make_client(fake_server.base_url) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)

    assert caught.value.code == "inference_bad_response"


def test_submit_without_job_id_bad_response(fake_server, tmp_path):
    npz_path = tmp_path / "volume.npz"
    npz_path.write_bytes(b"npz")
    fake_server.script("POST", "/v1/jobs", Reply(202, b'{"job_id": "../admin", "status": "x"}'))
    with make_client(fake_server.base_url) as client:
        with pytest.raises(InferenceError) as caught:
            client.submit(npz_path, [], idempotency_key="key-1")

    assert caught.value.code == "inference_bad_response"


def test_failed_job_carries_provider_code(fake_server):
    error = {"code": "modality_not_supported", "message": "CT only"}
    fake_server.script(
        "GET", STATUS_PATH, status_reply("running", 10), status_reply("failed", 10, error)
    )
    seen = []
    with make_client(fake_server.base_url) as client:
        with pytest.raises(InferenceError) as caught:
            client.wait(JOB_ID, on_progress=seen.append)

    assert caught.value.code == "inference_failed"
    assert caught.value.provider_code == "modality_not_supported"
    assert [status.status for status in seen] == ["running", "failed"]


def test_never_finishing_job_times_out(fake_server):
    fake_server.script("GET", STATUS_PATH, status_reply("running", 50))
    started = time.monotonic()
    with make_client(fake_server.base_url, job_timeout_s=0.5) as client:
        with pytest.raises(InferenceTimeout) as caught:
            client.wait(JOB_ID)
    elapsed_s = time.monotonic() - started

    assert caught.value.code == "inference_timeout"
    assert caught.value.params["last_status"] == "running"
    assert 0.5 <= elapsed_s < 3.0
    assert fake_server.count("GET", STATUS_PATH) >= 3


def test_read_timeout_retried_then_unavailable(fake_server):
    fake_server.script("GET", STATUS_PATH, Reply(200, b"{}", delay_s=0.5))
    with make_client(fake_server.base_url, read_timeout_s=0.1, max_retries=1) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)

    assert caught.value.code == "inference_unavailable"
    assert fake_server.count("GET", STATUS_PATH) == 2


def test_connection_refused_unavailable():
    base_url = f"http://127.0.0.1:{free_loopback_port()}"
    with make_client(base_url, max_retries=1) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)

    assert caught.value.code == "inference_unavailable"
    assert caught.value.params["attempts"] == 2


def test_valid_result_accepted(fake_server):
    fake_server.script("GET", RESULT_PATH, result_reply())
    result = fetch(fake_server)

    assert result.labels == (1, 5)
    assert result.mask.dtype == np.uint8
    assert np.array_equal(result.mask, good_mask())


def test_result_wrong_content_type(fake_server):
    reply = result_reply()
    reply.headers = {"Content-Type": "text/html"}
    fake_server.script("GET", RESULT_PATH, reply)
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_bad_response"
    assert "text/html" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"mask": np.zeros((4, 6, 6), np.uint8)}, "shape"),
        ({"mask": good_mask().astype(np.int16)}, "dtype"),
        ({"labels": np.array([1, 5], np.int64)}, "int32"),
        ({"labels": np.array([1], np.int32)}, "mask contains label values"),
        ({"labels": None}, "lacks"),
    ],
    ids=["mask-shape", "mask-dtype", "labels-dtype", "labels-mismatch", "labels-missing"],
)
def test_result_schema_violations(fake_server, overrides, problem):
    arrays = {"mask": good_mask(), "labels": np.array([1, 5], dtype=np.int32), **overrides}
    arrays = {key: value for key, value in arrays.items() if value is not None}
    fake_server.script("GET", RESULT_PATH, Reply(200, npz_bytes(**arrays), NPZ_TYPE))
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_bad_response"
    assert problem in str(caught.value)


def test_result_labels_not_requested(fake_server):
    fake_server.script("GET", RESULT_PATH, result_reply())
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server, categories=(1,))

    assert caught.value.code == "inference_bad_response"
    assert "[5] were not requested" in str(caught.value)


def test_result_labels_outside_catalogue(fake_server):
    mask = good_mask()
    mask[3, 5, 4] = 9
    fake_server.script(
        "GET", RESULT_PATH, result_reply(mask=mask, labels=np.array([1, 5, 9], np.int32))
    )
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server, categories=())

    assert caught.value.code == "inference_bad_response"
    assert "[9] were not requested" in str(caught.value)


def test_result_with_pickle_refused(fake_server):
    payload = np.array([{"code": pickle.dumps("anything")}], dtype=object)
    fake_server.script(
        "GET",
        RESULT_PATH,
        Reply(200, npz_bytes(mask=payload, labels=np.array([1], np.int32)), NPZ_TYPE),
    )
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_bad_response"
    assert "pickle" in str(caught.value)


def test_result_not_npz(fake_server):
    fake_server.script("GET", RESULT_PATH, Reply(200, b"plain bytes", NPZ_TYPE))
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_bad_response"


def test_result_over_size_cap(fake_server):
    # A mask of SHAPE_ZYX is 120 bytes; the cap adds 1 MiB for the container.
    fake_server.script("GET", RESULT_PATH, Reply(200, b"\0" * (2 * 1024 * 1024), NPZ_TYPE))
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_bad_response"
    assert "exceeds" in str(caught.value)


def test_result_409_rejected(fake_server):
    fake_server.script(
        "GET", RESULT_PATH, Reply(409, b'{"code": "job_not_succeeded", "message": "running"}')
    )
    with pytest.raises(InferenceError) as caught:
        fetch(fake_server)

    assert caught.value.code == "inference_rejected"
    assert caught.value.provider_code == "job_not_succeeded"


def test_cancel_finished_job_is_no_error(fake_server):
    fake_server.script("DELETE", STATUS_PATH, Reply(409, b'{"code": "job_already_finished"}'))
    with make_client(fake_server.base_url) as client:
        client.cancel(JOB_ID)

    assert fake_server.count("DELETE", STATUS_PATH) == 1


def test_token_absent_from_logs_and_repr(fake_server, caplog):
    fake_server.script("GET", STATUS_PATH, Reply(500, b"{}"))
    caplog.set_level(logging.DEBUG)
    with make_client(fake_server.base_url, max_retries=1) as client:
        with pytest.raises(InferenceError) as caught:
            client.get_status(JOB_ID)
        text = repr(client)

    assert "retry 1 of 1" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in text
    assert TOKEN not in str(caught.value)


def test_unknown_category_refused_before_sending(fake_server, tmp_path):
    npz_path = tmp_path / "volume.npz"
    npz_path.write_bytes(b"npz")
    with make_client(fake_server.base_url) as client:
        with pytest.raises(ValueError, match="not in the catalogue"):
            client.submit(npz_path, [1, 42], idempotency_key="key-1")

    assert fake_server.requests == []
