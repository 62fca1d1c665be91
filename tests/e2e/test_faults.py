"""Fault tests on real processes: killed workers, a flushed queue, storage down, load."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from scripts.devstack import run_flask
from tests.support.stack import REDIS_URL, running_stack
from tests.support.workers import TERMINAL, Rows, Workers

pytestmark = pytest.mark.e2e

CHEST_ZIP = "ct_chest_3slice_with_reference_segmentations.zip"
#: Short leases and sweeps make a lost worker visible within seconds.
FAST_RECOVERY = {"TASK_LEASE": "3", "SWEEP_INTERVAL": "1"}


def make_key(env) -> str:
    clinic = run_flask(env, "clinics", "create", "Clínica Falhas", "--seats", "3")
    return run_flask(env, "api-keys", "create", "--clinic", clinic, "--name", "RIS")


def upload(env, key, zip_path: Path) -> str:
    with open(zip_path, "rb") as study_zip:
        response = requests.post(
            f"{env['PORTAL_BASE_URL']}/api/studies/",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("exame.zip", study_zip, "application/zip")},
            timeout=60,
        )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def provider_job_count(env) -> int:
    jobs_dir = Path(env["DATA_DIR"]) / "segmenter" / "jobs"
    return len(list(jobs_dir.iterdir())) if jobs_dir.exists() else 0


def test_killed_workers_lose_nothing(tmp_path, shared_dicom_dir):
    with running_stack(
        tmp_path,
        backend="postgresql",
        without=("worker",),
        SEGMENTER_JOB_DELAY_S="4",
        **FAST_RECOVERY,
    ) as stack:
        env = dict(stack.env)
        key = make_key(env)
        workers = Workers(env, tmp_path / "logs")
        rows = Rows(env["DATABASE_URL"])
        try:
            study_id = upload(env, key, shared_dicom_dir / CHEST_ZIP)
            first = workers.start()
            rows.wait_for(study_id, lambda a: a["status"] == "converting", timeout_s=60)
            workers.kill(first)
            assert rows.attempts(study_id)[-1]["status"] == "converting"

            second = workers.start()
            rows.wait_for(
                study_id,
                lambda a: a["status"] == "inference_running" and a["inference_job_id"],
                timeout_s=120,
            )
            workers.kill(second)
            assert provider_job_count(env) == 1

            workers.start()
            final = rows.wait_for(study_id, lambda a: a["status"] in TERMINAL, timeout_s=180)
            attempts = rows.attempts(study_id)
            assert final["status"] == "succeeded", workers.logs()[-3000:]
            assert len(attempts) == 1
            assert attempts[0]["recovery_count"] == 2
            assert provider_job_count(env) == 1
            assert rows.count_artifacts(study_id, "mask_nifti") == 1
            assert rows.count_artifacts(study_id, "volume_npz") == 1
            result = requests.get(
                f"{env['PORTAL_BASE_URL']}/api/studies/{study_id}/result/",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert result.status_code == 200
        finally:
            workers.stop_all()
            rows.close()


def test_flushed_queue_is_swept(tmp_path, shared_dicom_dir):
    import re

    import redis

    with running_stack(
        tmp_path,
        backend="postgresql",
        without=("worker",),
        DICOM_TARGET_HW="(256, 256)",
        DICOM_TARGET_SLICES="32",
        **FAST_RECOVERY,
    ) as stack:
        env = dict(stack.env)
        key = make_key(env)
        study_ids = [upload(env, key, shared_dicom_dir / CHEST_ZIP) for _ in range(3)]
        # Only this test's queue is flushed: other suites may share the Redis server.
        queue_name = re.sub("[^a-z0-9]", "", env["HUEY_NAME"])
        client = redis.Redis.from_url(REDIS_URL)
        try:
            ours = [k for k in client.scan_iter("huey.*") if k.decode().endswith(queue_name)]
            assert ours, "the uploads queued no task"
            client.delete(*ours)
            assert client.llen(f"huey.redis.{queue_name}") == 0
        finally:
            client.close()

        workers = Workers(env, tmp_path / "logs")
        rows = Rows(env["DATABASE_URL"])
        try:
            workers.start(workers=2)
            finals = [
                rows.wait_for(s, lambda a: a["status"] in TERMINAL, timeout_s=180)
                for s in study_ids
            ]
            assert [final["status"] for final in finals] == ["succeeded"] * 3
            assert "no queued task; step queued again" in workers.logs()
            assert provider_job_count(env) == 3
        finally:
            workers.stop_all()
            rows.close()


def test_storage_outage_while_writing_results(tmp_path, shared_dicom_dir):
    with running_stack(tmp_path, backend="sqlite", **FAST_RECOVERY) as stack:
        env = dict(stack.env)
        key = make_key(env)
        rows = Rows(env["DATABASE_URL"])
        try:
            study_id = upload(env, key, shared_dicom_dir / CHEST_ZIP)
            rows.wait_for(
                study_id, lambda a: a["status"] == "writing_results", timeout_s=120, poll_s=0.01
            )
            storage = stack.service("storage")
            storage.process.kill()
            storage.process.wait(timeout=10)
            time.sleep(5)
            assert stack.restart_dead() == ["storage"]
            restarted_at = datetime.now(UTC)
            final = rows.wait_for(study_id, lambda a: a["status"] in TERMINAL, timeout_s=120)
            worker_log = stack.service("worker").log_path.read_text(errors="replace")
            assert final["status"] == "succeeded", worker_log[-3000:]
            # The step waited for storage (boto3's and the portal's retries) and did not fail.
            finished_at = final["finished_at"]
            if isinstance(finished_at, str):  # SQLite returns the stored text
                finished_at = datetime.fromisoformat(finished_at)
            if finished_at.tzinfo is None:
                finished_at = finished_at.replace(tzinfo=UTC)
            assert finished_at > restarted_at - timedelta(seconds=1)
            assert rows.count_artifacts(study_id, "mask_nifti") == 1
        finally:
            rows.close()


def test_twenty_studies_with_two_workers(tmp_path, shared_dicom_dir):
    from bench.throughput import run_load

    result = run_load(tmp_path, studies=20, workers=2, timeout_s=600)
    assert result.statuses == {"succeeded": 20}
    assert result.attempts_per_study == [1] * 20
    assert result.provider_jobs == 20
    assert result.mask_artifacts == 20
    assert result.studies_per_minute > 0


def test_sigterm_hands_study_back(tmp_path, shared_dicom_dir):
    import signal

    with running_stack(
        tmp_path,
        backend="postgresql",
        without=("worker",),
        SEGMENTER_JOB_DELAY_S="6",
        **FAST_RECOVERY,
    ) as stack:
        env = dict(stack.env)
        key = make_key(env)
        workers = Workers(env, tmp_path / "logs")
        rows = Rows(env["DATABASE_URL"])
        try:
            study_id = upload(env, key, shared_dicom_dir / CHEST_ZIP)
            first = workers.start()
            rows.wait_for(
                study_id,
                lambda a: a["status"] == "inference_running" and a["inference_job_id"],
                timeout_s=120,
            )
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0
            handed_back = rows.attempts(study_id)[-1]
            assert handed_back["status"] == "inference_queued"
            assert handed_back["recovery_count"] == 0

            workers.start()
            final = rows.wait_for(study_id, lambda a: a["status"] in TERMINAL, timeout_s=120)
            assert final["status"] == "succeeded", workers.logs()[-3000:]
            assert final["recovery_count"] == 0
            assert provider_job_count(env) == 1
        finally:
            workers.stop_all()
            rows.close()
