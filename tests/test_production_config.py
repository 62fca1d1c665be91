"""Start-up validation of the production configuration, built from `.env.example`."""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys

import pytest
from dotenv import dotenv_values

from portal.config import PROJECT_ROOT, ConfigurationError, Settings

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"

#: The values an operator fills in for production; everything else keeps `.env.example`'s.
PRODUCTION_VALUES = {
    "PORTAL_ENV": "production",
    "SECRET_KEY": secrets.token_hex(32),
    "PORTAL_BASE_URL": "https://portal.clinica.example.com.br",
    "DATABASE_URL": "postgresql+psycopg://portal@db.internal:5432/portal",
    "REDIS_URL": "rediss://cache.internal:6379/0",
    "S3_ENDPOINT_URL": "",
    "COGNITO_REGION": "sa-east-1",
    "COGNITO_USER_POOL_ID": "sa-east-1_AbCdEfGhI",
    "COGNITO_CLIENT_ID": "4pq1example",
    "COGNITO_CLIENT_SECRET": secrets.token_hex(24),
    "COGNITO_DOMAIN": "https://auth.clinica.example.com.br",
    "OIDC_ISSUER": "",
    "INFERENCE_API_URL": "https://inference.vendor.example.com",
    "INFERENCE_API_TOKEN": secrets.token_hex(24),
    "PROXY_FIX_HOPS": "1",
    "PATIENT_DATA_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "S3_SSE": "aws:kms",
}


def example_env() -> dict[str, str]:
    return {name: value or "" for name, value in dotenv_values(ENV_EXAMPLE).items()}


def production_env(**changes: str) -> dict[str, str]:
    return example_env() | PRODUCTION_VALUES | changes


def test_env_example_lists_every_setting_read():
    source = (PROJECT_ROOT / "portal" / "config.py").read_text(encoding="utf-8")
    read = set(re.findall(r'get\("([A-Z0-9_]+)"', source))
    documented = set(example_env())
    assert read, "no setting names found in portal/config.py"
    assert read - documented == set(), "settings missing from .env.example"


def test_env_example_is_development():
    settings = Settings.from_env(example_env())
    assert not settings.is_production
    assert settings.log_format == "text"
    settings.check()


def test_production_settings_pass():
    settings = Settings.from_env(production_env())
    settings.check()
    assert settings.is_production
    assert settings.log_format == "json"
    assert settings.proxy_fix_hops == 1
    assert settings.issuer == "https://cognito-idp.sa-east-1.amazonaws.com/sa-east-1_AbCdEfGhI"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is missing"),
        ({"SECRET_KEY": "short-but-random-9f3a"}, "SECRET_KEY is missing or shorter than 32"),
        ({"SECRET_KEY": "ab" * 32}, "SECRET_KEY is insecure"),
        ({"SECRET_KEY": "dev-insecure-" + secrets.token_hex(32)}, "SECRET_KEY"),
        ({"FLASK_DEBUG": "true"}, "FLASK_DEBUG is on"),
        ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG is on"),
        ({"PORTAL_BASE_URL": "http://portal.clinica.example.com.br"}, "PORTAL_BASE_URL"),
        ({"DATABASE_URL": "sqlite:////var/lib/portal/portal.sqlite3"}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL is missing"),
        ({"COGNITO_REGION": "", "COGNITO_USER_POOL_ID": ""}, "COGNITO_USER_POOL_ID"),
        ({"COGNITO_CLIENT_ID": ""}, "COGNITO_CLIENT_ID is missing"),
        ({"COGNITO_CLIENT_SECRET": ""}, "COGNITO_CLIENT_SECRET is missing"),
        ({"COGNITO_DOMAIN": ""}, "COGNITO_DOMAIN is missing"),
        ({"INFERENCE_API_TOKEN": ""}, "INFERENCE_API_TOKEN is missing"),
        ({"S3_BUCKET": ""}, "S3_BUCKET is missing"),
        ({"WEBHOOK_ALLOW_LOOPBACK_HTTP": "true"}, "WEBHOOK_ALLOW_LOOPBACK_HTTP is on"),
        ({"WEBHOOK_READ_TIMEOUT": "0"}, "WEBHOOK_READ_TIMEOUT must be"),
        ({"WEBHOOK_CONNECT_TIMEOUT": "600"}, "WEBHOOK_CONNECT_TIMEOUT must be"),
        ({"PATIENT_DATA_KEY": ""}, "PATIENT_DATA_KEY is missing"),
        ({"PATIENT_DATA_KEY": "c2hvcnQ="}, "PATIENT_DATA_KEY must be the base64 of 32"),
        ({"S3_SSE": ""}, "S3_SSE is missing"),
        ({"S3_SSE": "aes256"}, "S3_SSE='aes256' is invalid"),
        ({"S3_SSE": "AES256", "S3_SSE_KMS_KEY_ID": "alias/portal"}, "S3_SSE must be aws:kms"),
    ],
)
def test_production_rejects_setting(changes, fragment):
    settings = Settings.from_env(production_env(**changes))
    with pytest.raises(ConfigurationError) as raised:
        settings.check()
    message = str(raised.value)
    assert fragment in message
    # Only the changed setting is reported, so the message points at one fix.
    assert message.count("\n- ") == 1, message


def test_production_reports_every_problem_at_once():
    settings = Settings.from_env(
        production_env(SECRET_KEY="", FLASK_DEBUG="true", INFERENCE_API_TOKEN="")
    )
    with pytest.raises(ConfigurationError) as raised:
        settings.check()
    message = str(raised.value)
    assert "SECRET_KEY" in message
    assert "FLASK_DEBUG" in message
    assert "INFERENCE_API_TOKEN" in message


def test_development_allows_debug_and_defaults():
    settings = Settings.from_env(example_env() | {"FLASK_DEBUG": "true"})
    settings.check()
    assert settings.debug is True
    assert settings.flask_config()["DEBUG"] is True


def test_webhook_loopback_setting_is_off_by_default():
    assert Settings.from_env(example_env()).webhook_allow_loopback_http is False
    allowed = Settings.from_env(example_env() | {"WEBHOOK_ALLOW_LOOPBACK_HTTP": "true"})
    allowed.check()
    assert allowed.webhook_allow_loopback_http is True


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PORTAL_ENV", "prod", "PORTAL_ENV"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("METRICS_PORT", "70000", "not a TCP port"),
        ("PROXY_FIX_HOPS", "one", "not an integer"),
        ("WEBHOOK_ALLOW_LOOPBACK_HTTP", "maybe", "not a boolean"),
        ("WEBHOOK_READ_TIMEOUT", "ten", "not a number"),
    ],
)
def test_invalid_deployment_value_rejected(name, value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Settings.from_env(example_env() | {name: value})


def test_gunicorn_stops_on_invalid_configuration(tmp_path):
    env = production_env(SECRET_KEY="", DATA_DIR=str(tmp_path)) | {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(PROJECT_ROOT / "gunicorn.conf.py"),
            "--bind",
            "127.0.0.1:0",
            "wsgi:app",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr


def test_worker_stops_on_invalid_configuration(tmp_path):
    env = production_env(FLASK_DEBUG="true", DATA_DIR=str(tmp_path)) | {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the portal cannot start" in result.stderr
    assert "FLASK_DEBUG is on" in result.stderr
    assert "Traceback" not in result.stderr
