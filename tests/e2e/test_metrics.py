"""The Prometheus endpoints of the web app and the worker after real studies ran."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts.devstack import run_flask
from tests.e2e.test_main_job import wait_for_terminal_status
from tests.support.servers import free_port
from tests.support.stack import running_stack

CT_ZIP = "ct_chest_3slice_with_reference_segmentations.zip"
MR_ZIP = "mr_t1_3d_jpeg_lossless_and_j2k_fragmented.zip"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Return every sample of http://127.0.0.1:PORT/metrics keyed by name and labels."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not exposed; names: {sorted({n for n, _ in samples})}"
    return samples[key]


def upload(base_url: str, headers: dict, path) -> str:
    with open(path, "rb") as study_zip:
        created = requests.post(
            f"{base_url}/api/studies/",
            headers=headers,
            files={"file": ("exame.zip", study_zip, "application/zip")},
            timeout=60,
        )
    assert created.status_code == 202, created.text
    return created.json()["id"]


def test_metrics_after_studies(tmp_path, shared_dicom_dir):
    web_metrics_port, worker_metrics_port = free_port(), free_port()
    with running_stack(
        tmp_path,
        backend="postgresql",
        METRICS_PORT=web_metrics_port,
        WORKER_METRICS_PORT=worker_metrics_port,
    ) as stack:
        env = stack.env
        base_url = env["PORTAL_BASE_URL"]
        clinic = run_flask(env, "clinics", "create", "Clínica Métricas", "--seats", "2")
        key = run_flask(env, "api-keys", "create", "--clinic", clinic, "--name", "RIS")
        headers = {"Authorization": f"Bearer {key}"}

        ct_study = upload(base_url, headers, shared_dicom_dir / CT_ZIP)
        mr_study = upload(base_url, headers, shared_dicom_dir / MR_ZIP)
        ct_final, _ = wait_for_terminal_status(base_url, ct_study, headers)
        mr_final, _ = wait_for_terminal_status(base_url, mr_study, headers)
        assert ct_final["status"] == "succeeded"
        # The reference segmenter handles CT only, so the MR study fails at inference.
        assert mr_final["status"] == "failed"
        assert mr_final["error"]["code"] == "modality_not_supported"

        web = scrape(web_metrics_port)
        upload_count = sample(
            web,
            "portal_http_request_duration_seconds_count",
            method="POST",
            route="/api/studies/",
            status="202",
        )
        assert upload_count == 2
        status_polls = sample(
            web,
            "portal_http_request_duration_seconds_count",
            method="GET",
            route="/api/studies/<study_id>/status/",
            status="200",
        )
        assert status_polls >= 2
        assert sample(web, "portal_studies", status="succeeded") == 1
        assert sample(web, "portal_studies", status="failed") == 1
        assert sample(web, "portal_studies", status="converting") == 0
        assert sample(web, "portal_queue_depth") == 0

        worker = scrape(worker_metrics_port)
        expected_runs = [
            ("convert", "ok", 2),
            ("inference", "ok", 1),
            ("inference", "error", 1),
            ("results", "ok", 1),
        ]
        for step, outcome, runs in expected_runs:
            labels = {"step": step, "outcome": outcome}
            assert sample(worker, "portal_step_duration_seconds_count", **labels) == runs, labels
            assert sample(worker, "portal_step_duration_seconds_sum", **labels) > 0, labels
        errors = sample(worker, "portal_inference_errors_total", code="modality_not_supported")
        assert errors == 1

        # The running consumer touches its heartbeat file, which the health check reads.
        assert run_flask(env, "worker-health", "--max-age", "30") == "worker healthy"

        # The metrics ports are not the web port: the load balancer forwards WEB_PORT only.
        assert requests.get(f"{base_url}/metrics", timeout=10).status_code == 404
