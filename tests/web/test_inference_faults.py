"""The inference step against a misbehaving provider on 127.0.0.1, run in the test process.

Each case ends in the state and error code the worker must reach; the circuit breaker in
the database opens after consecutive unavailable calls and closes after a success.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest

from tests.inference.fake_server import FakeInferenceServer, Reply

SHAPE_ZYX = (4, 8, 8)
JOB = "job-1"


def result_npz(shape_zyx=SHAPE_ZYX, label=1) -> bytes:
    mask = np.zeros(shape_zyx, dtype=np.uint8)
    mask[1, 2:5, 2:5] = label
    buffer = io.BytesIO()
    np.savez(buffer, mask=mask, labels=np.asarray([label], dtype=np.int32))
    return buffer.getvalue()


def status_body(status, progress=0, error=None) -> bytes:
    return json.dumps({"status": status, "progress": progress, "error": error}).encode()


@pytest.fixture
def provider():
    server = FakeInferenceServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def step(make_app, provider, tmp_path, monkeypatch):
    """Return (app, run) where run() makes a queued attempt and runs the inference step."""
    from portal import tasks

    app = make_app(
        inference_api_url=provider.base_url,
        inference_api_token="fault-token",
        inference_api_read_timeout_s=0.5,
        inference_api_retries=1,
        inference_api_timeout_s=3.0,
        inference_breaker_failures=2,
        inference_breaker_cooldown_s=0.5,
        inference_max_wait_s=60.0,
    )
    queued_next, rescheduled = [], []
    monkeypatch.setattr(tasks, "write_results", lambda **kwargs: queued_next.append(kwargs))
    monkeypatch.setattr(
        tasks.run_inference,
        "schedule",
        lambda kwargs=None, delay=None: rescheduled.append((kwargs, delay)),
    )

    def run(attempt_id=None):
        with app.app_context():
            attempt_id = attempt_id or make_queued_attempt(app, tmp_path)
            tasks.run_inference.call_local(attempt_id=str(attempt_id))
            return load(attempt_id)

    run.queued_next = queued_next
    run.rescheduled = rescheduled
    return app, run


def make_queued_attempt(app, tmp_path) -> uuid.UUID:
    from portal.clinics.services import create_clinic
    from portal.extensions import db
    from portal.storage import study_object_key
    from portal.studies.models import Artifact, ArtifactKind, Attempt, Study, StudyStatus

    clinic = create_clinic(f"Clínica {uuid.uuid4().hex[:6]}", seat_limit=1)
    study = Study(id=uuid.uuid4(), clinic_id=clinic.id, requested_categories=["lung"])
    attempt = Attempt(
        id=uuid.uuid4(), clinic_id=clinic.id, number=1, status=StudyStatus.INFERENCE_QUEUED
    )
    study.attempts.append(attempt)
    volume_path = tmp_path / f"volume-{attempt.id}.npz"
    np.savez(
        volume_path,
        image=np.zeros(SHAPE_ZYX, dtype=np.float32),
        spacing_mm=np.ones(3, dtype=np.float32),
        modality=np.asarray("CT"),
        categories=np.asarray([1], dtype=np.int32),
    )
    key = study_object_key(clinic.id, study.id, "volume.npz", attempt_id=attempt.id)
    size = app.extensions["portal_storage"].upload_file(
        volume_path, key, content_type="application/octet-stream"
    )
    study.artifacts.append(
        Artifact(
            attempt_id=attempt.id,
            clinic_id=clinic.id,
            kind=ArtifactKind.VOLUME_NPZ,
            storage_key=key,
            size_bytes=size,
        )
    )
    db.session.add(study)
    db.session.commit()
    return attempt.id


def load(attempt_id):
    from portal.extensions import db
    from portal.studies.models import Attempt

    db.session.expire_all()
    return db.session.get(Attempt, attempt_id)


def breaker_state(app):
    from portal.breaker import inference_breaker

    with app.app_context():
        record = inference_breaker(app.config["PORTAL_SETTINGS"]).state()
        return record.state.value if record else "closed"


def script_success(provider, *, result=None):
    provider.script("POST", "/v1/jobs", Reply(202, json.dumps({"job_id": JOB}).encode()))
    provider.script("GET", f"/v1/jobs/{JOB}", Reply(200, status_body("succeeded", 100)))
    provider.script(
        "GET",
        f"/v1/jobs/{JOB}/result",
        Reply(200, result or result_npz(), {"Content-Type": "application/octet-stream"}),
    )


def test_success_stores_result_and_moves_on(step, provider):
    app, run = step
    script_success(provider)
    attempt = run()
    assert attempt.status.value == "writing_results"
    assert attempt.inference_job_id == JOB
    assert run.queued_next == [{"attempt_id": str(attempt.id)}]
    submit = next(r for r in provider.requests if r.method == "POST")
    assert submit.headers["Idempotency-Key"] == str(attempt.id)


def test_server_errors_for_a_while_then_success(step, provider):
    app, run = step
    script_success(provider)
    provider.script(
        "POST",
        "/v1/jobs",
        Reply(500, b"{}"),
        Reply(503, b"{}"),
        Reply(202, json.dumps({"job_id": JOB}).encode()),
    )
    attempt = run()
    # Two 500s use up the one retry: the attempt waits for the provider, not failed.
    assert attempt.status.value == "inference_queued"
    assert attempt.error_code is None
    assert attempt.recovery_count == 0
    assert len(run.rescheduled) == 1
    again = run(attempt.id)
    assert again.status.value == "writing_results"
    assert provider.count("POST", "/v1/jobs") == 3
    assert breaker_state(app) == "closed"


def test_rate_limit_honours_retry_after(step, provider):
    app, run = step
    script_success(provider)
    provider.script(
        "POST",
        "/v1/jobs",
        Reply(429, b"{}", {"Retry-After": "1"}),
        Reply(202, json.dumps({"job_id": JOB}).encode()),
    )
    import time

    started = time.monotonic()
    attempt = run()
    assert attempt.status.value == "writing_results"
    assert time.monotonic() - started >= 1.0


def test_hanging_provider_opens_breaker_then_closes(step, provider):
    app, run = step
    provider.script("POST", "/v1/jobs", Reply(202, b"{}", delay_s=2.0))
    first = run()
    assert first.status.value == "inference_queued"
    assert breaker_state(app) == "closed"
    second = run()
    assert second.status.value == "inference_queued"
    assert breaker_state(app) == "open"
    posts_while_open = provider.count("POST", "/v1/jobs")
    third = run()
    # An open breaker sends nothing and keeps the study waiting, with no attempt used.
    assert third.status.value == "inference_queued"
    assert provider.count("POST", "/v1/jobs") == posts_while_open
    assert third.recovery_count == 0

    import time

    time.sleep(0.6)
    script_success(provider)
    probe = run(third.id)
    assert probe.status.value == "writing_results"
    assert breaker_state(app) == "closed"


@pytest.mark.parametrize(
    ("case", "reply_path", "reply"),
    [
        ("malformed json", f"/v1/jobs/{JOB}", Reply(200, b"{not json")),
        (
            "wrong shape",
            f"/v1/jobs/{JOB}/result",
            Reply(200, result_npz((4, 8, 9)), {"Content-Type": "application/octet-stream"}),
        ),
        (
            "body too large",
            f"/v1/jobs/{JOB}/result",
            Reply(
                200,
                b"\0" * (int(np.prod(SHAPE_ZYX)) + 2 * 1024 * 1024),
                {"Content-Type": "application/octet-stream"},
            ),
        ),
        (
            "unknown label",
            f"/v1/jobs/{JOB}/result",
            Reply(200, result_npz(label=9), {"Content-Type": "application/octet-stream"}),
        ),
    ],
)
def test_bad_responses_fail_the_study(step, provider, case, reply_path, reply):
    app, run = step
    script_success(provider)
    method = "GET"
    provider.script(method, reply_path, reply)
    attempt = run()
    assert attempt.status.value == "failed", case
    assert attempt.error_code == "inference_bad_response", case
    assert run.queued_next == []
    assert breaker_state(app) == "closed"


def test_provider_failure_keeps_its_code(step, provider):
    app, run = step
    script_success(provider)
    provider.script(
        "GET",
        f"/v1/jobs/{JOB}",
        Reply(200, status_body("failed", 10, {"code": "modality_not_supported"})),
    )
    attempt = run()
    assert attempt.status.value == "failed"
    assert attempt.error_code == "modality_not_supported"


def test_job_longer_than_timeout_fails(step, provider):
    app, run = step
    script_success(provider)
    provider.script("GET", f"/v1/jobs/{JOB}", Reply(200, status_body("running", 50)))
    attempt = run()
    assert attempt.status.value == "failed"
    assert attempt.error_code == "inference_timeout"


def test_provider_down_past_max_wait_fails(step, provider):
    from sqlalchemy import update

    from portal.db_types import utcnow
    from portal.extensions import db
    from portal.studies.models import Attempt

    app, run = step
    provider.script("POST", "/v1/jobs", Reply(503, b"{}"))
    with app.app_context():
        attempt = run()
        assert attempt.status.value == "inference_queued"
        from datetime import timedelta

        db.session.execute(
            update(Attempt)
            .where(Attempt.id == attempt.id)
            .values(queued_at=utcnow() - timedelta(seconds=3600))
        )
        db.session.commit()
    final = run(attempt.id)
    assert final.status.value == "failed"
    assert final.error_code == "inference_unavailable"


def test_cancel_during_wait_cancels_provider_job(step, provider):
    import threading
    import time

    from portal.extensions import db
    from portal.studies import services

    app, run = step
    script_success(provider)
    provider.script("GET", f"/v1/jobs/{JOB}", Reply(200, status_body("running", 20)))
    provider.script("DELETE", f"/v1/jobs/{JOB}", Reply(200, status_body("cancelled")))
    outcome = {}

    def cancel_soon():
        time.sleep(1.0)
        with app.app_context():
            from portal.studies.models import Study

            study = db.session.query(Study).one()
            services.cancel_study(study, actor=services.Actor())
            db.session.commit()

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    outcome["attempt"] = run()
    canceller.join()
    assert outcome["attempt"].status.value == "cancelled"
    assert provider.count("DELETE", f"/v1/jobs/{JOB}") == 1
    assert run.queued_next == []
