"""Production behaviour of the app: liveness, proxy headers, JSON logs, metrics, worker health."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time

import pytest
from flask import jsonify, request
from prometheus_client import REGISTRY

from portal.logging_setup import JsonFormatter, RequestContextFilter
from portal.metrics import PortalStateCollector, count_inference_error, step_timer


def add_echo_route(app):
    @app.get("/test-echo")
    def echo():
        return jsonify(remote_addr=request.remote_addr, scheme=request.scheme, host=request.host)


def test_liveness_needs_no_sign_in(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_proxy_headers_trusted_with_one_hop(make_app):
    app = make_app(proxy_fix_hops=1)
    add_echo_route(app)
    response = app.test_client().get(
        "/test-echo",
        headers={
            "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
            "X-Forwarded-Proto": "https",
            "Host": "portal.example.com.br",
        },
    )
    body = response.get_json()
    # Only the last address, added by the load balancer itself, is trusted.
    assert body["remote_addr"] == "203.0.113.9"
    assert body["scheme"] == "https"
    assert body["host"] == "portal.example.com.br"


def test_proxy_headers_ignored_by_default(app):
    add_echo_route(app)
    response = app.test_client().get(
        "/test-echo", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    )
    body = response.get_json()
    assert body["remote_addr"] == "127.0.0.1"
    assert body["scheme"] == "http"


@pytest.fixture
def json_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("portal.requests")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def test_request_log_is_json_with_request_id(client, json_log):
    response = client.get(
        "/health/live?code=secret-authorization-code", headers={"X-Request-Id": "req-0123456789"}
    )
    assert response.headers["X-Request-Id"] == "req-0123456789"
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["request_id"] == "req-0123456789"
    assert entry["logger"] == "portal.requests"
    assert entry["level"] == "INFO"
    assert entry["route"] == "/health/live"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0
    assert entry["message"].startswith("GET /health/live 200 ")
    assert "secret-authorization-code" not in json_log.getvalue()


def test_json_formatter_keeps_exception():
    try:
        raise ValueError("bad value")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "portal.test", logging.ERROR, __file__, 1, "failed %s", ("convert",), exc_info
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed convert"
    assert entry["level"] == "ERROR"
    assert entry["request_id"] == "-"
    assert "ValueError: bad value" in entry["exception"]


def latency_count(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "portal_http_request_duration_seconds_count",
        {"method": "GET", "route": route, "status": status},
    )
    return value or 0.0


def test_request_latency_by_route(client):
    before_live = latency_count("/health/live", "200")
    before_unmatched = latency_count("<unmatched>", "404")
    client.get("/health/live")
    client.get("/health/live")
    client.get("/no-such-page-12345")
    assert latency_count("/health/live", "200") == before_live + 2
    assert latency_count("<unmatched>", "404") == before_unmatched + 1


def step_count(step: str, outcome: str) -> float:
    labels = {"step": step, "outcome": outcome}
    return REGISTRY.get_sample_value("portal_step_duration_seconds_count", labels) or 0.0


def test_step_timer_records_outcome():
    ok_before = step_count("test-step", "ok")
    error_before = step_count("test-step", "error")
    with step_timer("test-step"):
        time.sleep(0.01)
    with pytest.raises(RuntimeError), step_timer("test-step"):
        raise RuntimeError("step failed")
    assert step_count("test-step", "ok") == ok_before + 1
    assert step_count("test-step", "error") == error_before + 1
    total_s = REGISTRY.get_sample_value(
        "portal_step_duration_seconds_sum", {"step": "test-step", "outcome": "ok"}
    )
    assert total_s >= 0.01


def test_inference_errors_counted_by_code():
    name = "portal_inference_errors_total"
    before = REGISTRY.get_sample_value(name, {"code": "test_code"}) or 0.0
    count_inference_error("test_code")
    assert REGISTRY.get_sample_value(name, {"code": "test_code"}) == before + 1


def test_studies_by_latest_attempt_status(app, make_clinic, settings):
    from portal.extensions import db
    from portal.studies.models import Attempt, Study, StudyStatus

    clinic_id = make_clinic()
    with app.app_context():
        retried = Study(clinic_id=clinic_id)
        waiting = Study(clinic_id=clinic_id)
        db.session.add_all([retried, waiting])
        db.session.flush()
        db.session.add_all(
            [
                Attempt(study_id=retried.id, clinic_id=clinic_id, number=1, status="failed"),
                Attempt(study_id=retried.id, clinic_id=clinic_id, number=2, status="succeeded"),
                Attempt(study_id=waiting.id, clinic_id=clinic_id, number=1, status="uploaded"),
            ]
        )
        db.session.commit()

    families = {
        family.name: family for family in PortalStateCollector(settings.database_url).collect()
    }
    studies = {
        sample.labels["status"]: sample.value for sample in families["portal_studies"].samples
    }
    assert set(studies) == {str(status) for status in StudyStatus}
    assert studies["succeeded"] == 1
    assert studies["uploaded"] == 1
    assert studies["failed"] == 0
    assert "portal_queue_depth" in families
    assert families["portal_queue_depth"].samples[0].value >= 0


def test_studies_series_left_out_when_database_fails(tmp_path):
    collector = PortalStateCollector(f"sqlite:///{tmp_path / 'missing' / 'no.sqlite3'}")
    names = {family.name for family in collector.collect()}
    assert "portal_studies" not in names


def test_worker_health_reads_heartbeat(make_app, tmp_path):
    heartbeat = tmp_path / "worker-heartbeat"
    app = make_app(worker_heartbeat_file=str(heartbeat))
    runner = app.test_cli_runner()

    missing = runner.invoke(args=["worker-health"])
    assert missing.exit_code == 1
    assert "not found" in missing.output

    heartbeat.touch()
    fresh = runner.invoke(args=["worker-health", "--max-age", "60"])
    assert fresh.exit_code == 0, fresh.output
    assert "worker healthy" in fresh.output

    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    stale = runner.invoke(args=["worker-health", "--max-age", "60"])
    assert stale.exit_code == 1
    assert "old" in stale.output
