"""Typed settings read from the environment in one place.

Every entry point (web, worker, `flask` CLI, tests) builds its settings here, after
`.env` has been loaded, so they all agree on the database, queue and storage.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Presigned URLs never live longer than this, whatever the configuration says.
MAX_PRESIGNED_URL_TTL_S = 300

DEV_SECRET_KEY_PREFIX = "dev-insecure-"


class ConfigurationError(RuntimeError):
    """A setting is missing or invalid; the message names it and says how to fix it."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use true or false")


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None


def _parse_hw(name: str, raw: str) -> tuple[int, int]:
    parts = raw.translate(str.maketrans("()[],", "     ")).split()
    if len(parts) != 2:
        raise ConfigurationError(f"{name}={raw!r} must be two integers such as (512, 512)")
    height, width = (_parse_int(name, p) for p in parts)
    if height < 16 or width < 16:
        raise ConfigurationError(f"{name}={raw!r}: each side must be at least 16 pixels")
    return height, width


@dataclass(frozen=True)
class Settings:
    """The portal's configuration, one field per environment variable."""

    secret_key: str
    portal_base_url: str = "http://127.0.0.1:8000"
    portal_env: str = "development"
    database_url: str = ""
    redis_url: str = ""
    huey_sqlite_path: str = ""
    data_dir: str = ""
    s3_bucket: str = "vizier-med"
    s3_endpoint_url: str = ""
    s3_public_endpoint_url: str = ""
    aws_region: str = "sa-east-1"
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    presigned_url_ttl_s: int = MAX_PRESIGNED_URL_TTL_S
    cognito_region: str = ""
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    cognito_client_secret: str = ""
    cognito_domain: str = ""
    oidc_issuer: str = ""
    inference_api_url: str = "http://127.0.0.1:8001"
    inference_api_token: str = ""
    inference_api_timeout_s: float = 300.0
    dicom_target_hw: tuple[int, int] = (512, 512)
    dicom_target_slices: int = 64
    dicom_window_center: float = 40.0
    dicom_window_width: float = 400.0
    #: Largest uncompressed native volume the viewer gets; larger ones show the model grid.
    viewer_native_max_bytes: int = 512 * 1024**2
    enable_seat_limit_check: bool = True
    max_upload_bytes: int = 2 * 1024**3
    default_locale: str = "pt_BR"
    default_timezone: str = "America/Sao_Paulo"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.portal_env == "production"

    @property
    def issuer(self) -> str:
        """Return the OIDC issuer: OIDC_ISSUER, else the Cognito user pool's issuer."""
        if self.oidc_issuer:
            return self.oidc_issuer.rstrip("/")
        if self.cognito_region and self.cognito_user_pool_id:
            return (
                f"https://cognito-idp.{self.cognito_region}.amazonaws.com/"
                f"{self.cognito_user_pool_id}"
            )
        return ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default `os.environ`), with development defaults."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(name, default)

        data_dir = get("DATA_DIR", str(PROJECT_ROOT / "var"))
        database_url = get("DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'portal.sqlite3'}"
        ttl = _parse_int("PRESIGNED_URL_TTL", get("PRESIGNED_URL_TTL", "300"))
        if not 1 <= ttl <= MAX_PRESIGNED_URL_TTL_S:
            raise ConfigurationError(
                f"PRESIGNED_URL_TTL={ttl} must be between 1 and {MAX_PRESIGNED_URL_TTL_S} seconds"
            )
        return cls(
            secret_key=get("SECRET_KEY") or DEV_SECRET_KEY_PREFIX + secrets.token_hex(16),
            portal_base_url=get("PORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            portal_env=get("PORTAL_ENV", "development"),
            database_url=database_url,
            redis_url=get("REDIS_URL"),
            huey_sqlite_path=get("HUEY_SQLITE_PATH") or str(Path(data_dir) / "huey.sqlite3"),
            data_dir=data_dir,
            s3_bucket=get("S3_BUCKET", "vizier-med"),
            s3_endpoint_url=get("S3_ENDPOINT_URL"),
            s3_public_endpoint_url=get("S3_PUBLIC_ENDPOINT_URL") or get("S3_ENDPOINT_URL"),
            aws_region=get("AWS_REGION", "sa-east-1"),
            aws_access_key_id=get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            presigned_url_ttl_s=ttl,
            cognito_region=get("COGNITO_REGION"),
            cognito_user_pool_id=get("COGNITO_USER_POOL_ID"),
            cognito_client_id=get("COGNITO_CLIENT_ID"),
            cognito_client_secret=get("COGNITO_CLIENT_SECRET"),
            cognito_domain=get("COGNITO_DOMAIN").rstrip("/"),
            oidc_issuer=get("OIDC_ISSUER"),
            inference_api_url=get("INFERENCE_API_URL", "http://127.0.0.1:8001").rstrip("/"),
            inference_api_token=get("INFERENCE_API_TOKEN"),
            inference_api_timeout_s=_parse_float(
                "INFERENCE_API_TIMEOUT", get("INFERENCE_API_TIMEOUT", "300")
            ),
            dicom_target_hw=_parse_hw("DICOM_TARGET_HW", get("DICOM_TARGET_HW", "(512, 512)")),
            dicom_target_slices=_parse_int("DICOM_TARGET_SLICES", get("DICOM_TARGET_SLICES", "64")),
            dicom_window_center=_parse_float(
                "DICOM_WINDOW_CENTER", get("DICOM_WINDOW_CENTER", "40")
            ),
            dicom_window_width=_parse_float("DICOM_WINDOW_WIDTH", get("DICOM_WINDOW_WIDTH", "400")),
            viewer_native_max_bytes=_parse_int(
                "VIEWER_NATIVE_MAX_BYTES", get("VIEWER_NATIVE_MAX_BYTES", str(512 * 1024**2))
            ),
            enable_seat_limit_check=_parse_bool(
                "ENABLE_SEAT_LIMIT_CHECK", get("ENABLE_SEAT_LIMIT_CHECK", "true")
            ),
            max_upload_bytes=_parse_int(
                "MAX_UPLOAD_BYTES", get("MAX_UPLOAD_BYTES", str(2 * 1024**3))
            ),
        )

    def check(self) -> None:
        """Raise ConfigurationError when a setting needed to serve requests is missing."""
        if self.dicom_window_width <= 0:
            raise ConfigurationError("DICOM_WINDOW_WIDTH must be positive")
        if self.dicom_target_slices < 2:
            raise ConfigurationError("DICOM_TARGET_SLICES must be at least 2")
        if self.viewer_native_max_bytes < 0:
            raise ConfigurationError(
                "VIEWER_NATIVE_MAX_BYTES must be 0 (always the model grid) or a positive size"
            )
        if self.is_production:
            if self.secret_key.startswith(DEV_SECRET_KEY_PREFIX) or len(self.secret_key) < 32:
                raise ConfigurationError(
                    "SECRET_KEY is missing or shorter than 32 characters: set a random value "
                    "(python -c 'import secrets; print(secrets.token_hex(32))')"
                )
            if not self.issuer:
                raise ConfigurationError(
                    "set COGNITO_REGION and COGNITO_USER_POOL_ID, or OIDC_ISSUER"
                )

    def flask_config(self) -> dict:
        """Return the Flask configuration keys derived from these settings."""
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
            # The file may be up to max_upload_bytes; the rest of the form is small.
            "MAX_CONTENT_LENGTH": self.max_upload_bytes + 64 * 1024,
            "MAX_FORM_MEMORY_SIZE": 1024 * 1024,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "SESSION_COOKIE_SECURE": self.portal_base_url.startswith("https://"),
            "REMEMBER_COOKIE_HTTPONLY": True,
            "BABEL_DEFAULT_LOCALE": self.default_locale,
            "BABEL_DEFAULT_TIMEZONE": self.default_timezone,
            "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).parent / "translations"),
            "WTF_CSRF_TIME_LIMIT": None,
            "PREFERRED_URL_SCHEME": "https" if self.portal_base_url.startswith("https") else "http",
        }
