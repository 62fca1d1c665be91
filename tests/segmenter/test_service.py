"""The segmenter's HTTP contract, exercised with plain requests calls."""

import io
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import requests

from tests.segmenter.phantoms import make_chest_phantom
from tests.segmenter.server import PROJECT_ROOT
from tests.segmenter.volumes import write_input_npz


@pytest.fixture(scope="module")
def volume_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("volume") / "volume.npz"
    write_input_npz(path, make_chest_phantom((12, 48, 64)))
    return path.read_bytes()


def post_job(server, body: bytes, *, categories=(), key=None, token=None):
    headers = {"Authorization": f"Bearer {token or server.token}"}
    if key != "":
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    return requests.post(
        f"{server.base_url}/v1/jobs",
        headers=headers,
        files={"volume": ("volume.npz", body, "application/octet-stream")},
        data=[("categories", str(value)) for value in categories],
        timeout=30,
    )


def get(server, path: str):
    return requests.get(
        f"{server.base_url}{path}",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )


def wait_for_status(server, job_id: str, expected: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        document = get(server, f"/v1/jobs/{job_id}").json()
        if document["status"] == expected:
            return document
        time.sleep(0.05)
    raise AssertionError(
        f"job {job_id} did not reach status {expected}; last status document: {document}"
    )


def test_health_needs_no_token(segmenter):
    response = requests.get(f"{segmenter.base_url}/v1/health", timeout=10)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("token", ["", "Basic abc", "Bearer wrong"])
def test_bad_token_401_json(segmenter, token):
    response = requests.get(
        f"{segmenter.base_url}/v1/jobs/{'0' * 32}", headers={"Authorization": token}, timeout=10
    )

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_submission_202_then_result_on_disk(segmenter, volume_bytes):
    response = post_job(segmenter, volume_bytes, categories=(5,))
    job_id = response.json()["job_id"]
    wait_for_status(segmenter, job_id, "succeeded")
    result = get(segmenter, f"/v1/jobs/{job_id}/result")

    assert response.status_code == 202
    assert response.json()["status"] in {"queued", "running", "succeeded"}
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "application/octet-stream"
    with np.load(io.BytesIO(result.content), allow_pickle=False) as npz:
        assert npz["mask"].shape == (12, 48, 64)
        assert npz["labels"].tolist() == [5]
        assert npz["labels"].dtype == np.int32
    data_dir = segmenter.log_path.parent / "data"
    assert (data_dir / "jobs" / job_id / "result.npz").is_file()


def test_repeated_key_returns_200_same_job(segmenter, volume_bytes):
    key = uuid.uuid4().hex
    first = post_job(segmenter, volume_bytes, key=key)
    second = post_job(segmenter, volume_bytes, key=key)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["job_id"] == first.json()["job_id"]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"key": ""}, "invalid_idempotency_key"),
        ({"categories": ("lung",)}, "invalid_categories"),
        ({"categories": (1, 7)}, "unknown_category"),
    ],
)
def test_bad_request_400_code(segmenter, volume_bytes, options, code):
    response = post_job(segmenter, volume_bytes, **options)

    assert response.status_code == 400
    assert response.json()["code"] == code


def test_missing_volume_field_400(segmenter):
    response = requests.post(
        f"{segmenter.base_url}/v1/jobs",
        headers={"Authorization": f"Bearer {segmenter.token}", "Idempotency-Key": "k"},
        data={"categories": "1"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["code"] == "missing_volume"


def test_form_and_npz_categories_must_agree(segmenter, tmp_path):
    path = write_input_npz(tmp_path / "v.npz", make_chest_phantom((8, 32, 32)), categories=(1,))

    response = post_job(segmenter, path.read_bytes(), categories=(5,))

    assert response.status_code == 400
    assert response.json()["code"] == "categories_mismatch"


def test_pickled_volume_400(segmenter, tmp_path):
    path = write_input_npz(
        tmp_path / "v.npz",
        make_chest_phantom((8, 32, 32)),
        overrides={"categories": np.array([1, None], dtype=object)},
    )

    response = post_job(segmenter, path.read_bytes())

    assert response.status_code == 400
    assert response.json()["code"] == "pickle_not_allowed"


def test_unknown_job_404(segmenter):
    for path in (f"/v1/jobs/{'a' * 32}", f"/v1/jobs/{'a' * 32}/result", "/v1/jobs/not-an-id"):
        response = get(segmenter, path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "job_not_found", path


def test_running_job_reports_progress(slow_segmenter, volume_bytes):
    job_id = post_job(slow_segmenter, volume_bytes).json()["job_id"]
    running = wait_for_status(slow_segmenter, job_id, "running")
    time.sleep(1.0)
    later = get(slow_segmenter, f"/v1/jobs/{job_id}").json()
    early_result = get(slow_segmenter, f"/v1/jobs/{job_id}/result")
    done = wait_for_status(slow_segmenter, job_id, "succeeded")

    assert 0 < running["progress"] < 100
    assert later["status"] == "running"
    assert later["progress"] > running["progress"]
    assert early_result.status_code == 409
    assert early_result.json()["code"] == "job_not_succeeded"
    assert done["progress"] == 100
    assert done["error"] is None


def test_queued_job_cancel(slow_segmenter, volume_bytes):
    # The single worker is busy with the first job, so the second one waits in the queue.
    busy_id = post_job(slow_segmenter, volume_bytes).json()["job_id"]
    queued_id = post_job(slow_segmenter, volume_bytes).json()["job_id"]
    queued = get(slow_segmenter, f"/v1/jobs/{queued_id}").json()
    response = requests.delete(
        f"{slow_segmenter.base_url}/v1/jobs/{queued_id}",
        headers={"Authorization": f"Bearer {slow_segmenter.token}"},
        timeout=10,
    )
    wait_for_status(slow_segmenter, busy_id, "succeeded")
    after = get(slow_segmenter, f"/v1/jobs/{queued_id}").json()

    assert queued["status"] == "queued"
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert after["status"] == "cancelled"


def test_start_without_token_exits_2():
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SEGMENTER_TOKEN", "INFERENCE_API_TOKEN"}
    }
    completed = subprocess.run(
        [sys.executable, "-m", "segmenter", "--port", "0"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert completed.returncode == 2
    assert "SEGMENTER_TOKEN" in completed.stderr
