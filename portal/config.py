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

#: Presigned URLs never live longer than this, whatever the configuration sets.
MAX_PRESIGNED_URL_TTL_S = 300

DEV_SECRET_KEY_PREFIX = "dev-insecure-"

#: A production SECRET_KEY needs at least this many characters and distinct characters.
MIN_SECRET_KEY_LENGTH = 32
MIN_SECRET_KEY_DISTINCT_CHARACTERS = 10

SECRET_KEY_HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"

#: A JWKS document is fetched again for an unknown `kid` at most this often.
JWKS_MIN_REFRESH_INTERVAL_S = 60
SMTP_TLS_MODES = ("starttls", "ssl", "none")
S3_SSE_MODES = ("", "AES256", "aws:kms")
PATIENT_DATA_KEY_HINT = (
    "python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"
)


class ConfigurationError(RuntimeError):
    """A setting is missing or invalid. The message names it and explains how to fix it."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use true or false")


def _is_aes256_key(raw: str) -> bool:
    import base64
    import binascii

    try:
        return len(base64.b64decode(raw, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


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


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_rate_limit(name: str, raw: str) -> str:
    """Check a Flask-Limiter limit string such as "30 per second; 1200 per minute"."""
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a rate limit: write it like '30 per second; 1200 per minute'"
        ) from None
    return raw


def _parse_hw(name: str, raw: str) -> tuple[int, int]:
    parts = raw.translate(str.maketrans("()[],", "     ")).split()
    if len(parts) != 2:
        raise ConfigurationError(f"{name}={raw!r} must be two integers such as (512, 512)")
    height, width = (_parse_int(name, p) for p in parts)
    if height < 16 or width < 16:
        raise ConfigurationError(f"{name}={raw!r}: each side must be at least 16 pixels")
    return height, width


def _parse_port(name: str, raw: str) -> int:
    port = _parse_int(name, raw or "0")
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"{name}={raw!r} is not a TCP port: use 1-65535, or 0 for none")
    return port


def _parse_log_format(raw: str, *, portal_env: str) -> str:
    """Return "json" or "text"; production logs JSON unless LOG_FORMAT is "text"."""
    value = raw.strip().lower() or ("json" if portal_env == "production" else "text")
    if value not in ("json", "text"):
        raise ConfigurationError(f"LOG_FORMAT={raw!r} is invalid: use json or text")
    return value


@dataclass(frozen=True)
class Settings:
    """The portal's configuration, one field per environment variable."""

    secret_key: str
    portal_base_url: str = "http://127.0.0.1:8000"
    portal_env: str = "development"
    database_url: str = ""
    #: The tables' owner, for migrations; the app's own role must not own them.
    database_migration_url: str = ""
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
    #: Bucket of the audit chain heads; empty uses S3_BUCKET. Production uses its own
    #: bucket with S3 Object Lock, so that locked versions never contain study data.
    audit_anchor_bucket: str = ""
    #: Days each chain head stays locked (Object Lock, compliance mode); 0 requests no lock.
    audit_anchor_retention_days: int = 0
    cognito_region: str = ""
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    cognito_client_secret: str = ""
    cognito_domain: str = ""
    oidc_issuer: str = ""
    #: App client ids whose access tokens the API accepts. Empty means COGNITO_CLIENT_ID only.
    api_token_client_ids: tuple[str, ...] = ()
    #: Clock skew allowed on `exp`, `nbf` and `iat` of access tokens.
    token_leeway_s: int = 30
    session_idle_timeout_s: int = 30 * 60
    session_max_lifetime_s: int = 12 * 60 * 60
    rate_limit_api: str = "30 per second; 1200 per minute"
    rate_limit_sign_in: str = "60 per minute"
    #: API requests with a missing or refused credential, per client address.
    rate_limit_api_unauthenticated: str = "30 per minute"
    rate_limit_enabled: bool = True
    inference_api_url: str = "http://127.0.0.1:8001"
    inference_api_token: str = ""
    inference_api_timeout_s: float = 300.0
    inference_api_connect_timeout_s: float = 5.0
    inference_api_read_timeout_s: float = 60.0
    inference_api_retries: int = 3
    #: Maximum time an attempt waits for an unavailable provider before it fails.
    inference_max_wait_s: float = 3600.0
    #: Consecutive unavailable calls that open the circuit breaker, and how long it stays open.
    inference_breaker_failures: int = 3
    inference_breaker_cooldown_s: float = 30.0
    #: A step holds its attempt for this long and renews the lease every third of it.
    task_lease_s: float = 60.0
    #: A worker process stops a task that runs longer than this.
    task_time_limit_s: float = 1800.0
    #: How often each worker's sweeper looks for lost attempts.
    sweep_interval_s: float = 30.0
    #: Lost leases an attempt may have before it fails with processing_interrupted.
    max_attempt_recoveries: int = 3
    #: Memory and CPU time the conversion child process of one upload may use.
    convert_memory_limit_mb: int = 4096
    convert_time_limit_s: float = 900.0
    #: Transient storage errors are retried for this long before a step gives up.
    storage_retry_window_s: float = 120.0
    #: A study that waits longer than this makes the page show the delay banner.
    queue_delay_warning_s: float = 600.0
    dicom_target_hw: tuple[int, int] = (512, 512)
    dicom_target_slices: int = 64
    dicom_window_center: float = 40.0
    dicom_window_width: float = 400.0
    #: Largest uncompressed native volume the viewer gets; larger ones show the model grid.
    viewer_native_max_bytes: int = 512 * 1024**2
    enable_seat_limit_check: bool = True
    invitation_ttl_days: int = 7
    smtp_host: str = ""
    smtp_port: int = 587
    #: starttls, ssl (TLS from the first byte) or none.
    smtp_tls: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    mail_sender: str = "Vizier Med <nao-responda@vizier-med.local>"
    max_upload_bytes: int = 2 * 1024**3
    #: Development only: allow webhook endpoints at http://127.0.0.1 (never in production).
    webhook_allow_loopback_http: bool = False
    #: Seconds to connect to a webhook endpoint, and to wait for each read of its response.
    webhook_connect_timeout_s: float = 5.0
    webhook_read_timeout_s: float = 10.0
    #: Base64 of the 32-byte AES-GCM key that encrypts patient identifiers (PATIENT_DATA_KEY).
    #: Empty in development: a key is then derived from SECRET_KEY.
    patient_data_key: str = ""
    #: Hours after a study's last attempt ends before its raw upload and inference input go.
    raw_retention_hours: int = 72
    #: Server-side encryption requested on every S3 write: "", "AES256" or "aws:kms".
    s3_sse: str = ""
    #: The KMS key for S3_SSE=aws:kms; empty uses the bucket's default key.
    s3_sse_kms_key_id: str = ""
    #: Flask's debug mode (FLASK_DEBUG); never allowed in production.
    debug: bool = False
    #: How many proxies in front of the app set X-Forwarded-For/-Proto/-Port; 0 trusts none.
    proxy_fix_hops: int = 0
    #: "json" for one JSON object per log line, "text" for plain lines.
    log_format: str = "text"
    #: Port of the web app's Prometheus endpoint (0: none), served by the gunicorn master.
    metrics_port: int = 0
    #: Port of the worker's Prometheus endpoint (0: none).
    worker_metrics_port: int = 0
    #: Address both metrics endpoints listen on.
    metrics_host: str = "127.0.0.1"
    #: File the worker touches while it is healthy; `flask worker-health` checks its age.
    worker_heartbeat_file: str = ""
    default_locale: str = "pt_BR"
    default_timezone: str = "America/Sao_Paulo"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.portal_env == "production"

    @property
    def migration_database_url(self) -> str:
        return self.database_migration_url or self.database_url

    @property
    def outbox_dir(self) -> Path:
        """Return the folder where e-mails are written when no SMTP host is set."""
        return Path(self.data_dir) / "outbox"

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

    @property
    def accepted_client_ids(self) -> tuple[str, ...]:
        """Return the app client ids whose access tokens the API accepts."""
        if self.api_token_client_ids:
            return self.api_token_client_ids
        return (self.cognito_client_id,) if self.cognito_client_id else ()

    @property
    def uses_https(self) -> bool:
        return self.portal_base_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default `os.environ`), with development defaults."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(name, default)

        data_dir = get("DATA_DIR", str(PROJECT_ROOT / "var"))
        portal_env = get("PORTAL_ENV", "development")
        if portal_env not in ("development", "production"):
            raise ConfigurationError(
                f"PORTAL_ENV={portal_env!r} is invalid: use development or production"
            )
        database_url = get("DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'portal.sqlite3'}"
        ttl = _parse_int("PRESIGNED_URL_TTL", get("PRESIGNED_URL_TTL", "300"))
        if not 1 <= ttl <= MAX_PRESIGNED_URL_TTL_S:
            raise ConfigurationError(
                f"PRESIGNED_URL_TTL={ttl} must be between 1 and {MAX_PRESIGNED_URL_TTL_S} seconds"
            )
        smtp_tls = get("SMTP_TLS", "starttls").strip().lower()
        if smtp_tls not in SMTP_TLS_MODES:
            raise ConfigurationError(f"SMTP_TLS={smtp_tls!r} must be one of starttls, ssl, none")
        invitation_ttl_days = _parse_int("INVITATION_TTL_DAYS", get("INVITATION_TTL_DAYS", "7"))
        if invitation_ttl_days < 1:
            raise ConfigurationError(
                f"INVITATION_TTL_DAYS={invitation_ttl_days} must be at least 1"
            )
        anchor_retention_days = _parse_int(
            "AUDIT_ANCHOR_RETENTION_DAYS", get("AUDIT_ANCHOR_RETENTION_DAYS", "0")
        )
        if anchor_retention_days < 0:
            raise ConfigurationError(
                f"AUDIT_ANCHOR_RETENTION_DAYS={anchor_retention_days} must be 0 (no lock) or more"
            )
        return cls(
            secret_key=get("SECRET_KEY") or DEV_SECRET_KEY_PREFIX + secrets.token_hex(16),
            portal_base_url=get("PORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            portal_env=portal_env,
            database_url=database_url,
            database_migration_url=get("DATABASE_MIGRATION_URL"),
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
            audit_anchor_bucket=get("AUDIT_ANCHOR_BUCKET"),
            audit_anchor_retention_days=anchor_retention_days,
            cognito_region=get("COGNITO_REGION"),
            cognito_user_pool_id=get("COGNITO_USER_POOL_ID"),
            cognito_client_id=get("COGNITO_CLIENT_ID"),
            cognito_client_secret=get("COGNITO_CLIENT_SECRET"),
            cognito_domain=get("COGNITO_DOMAIN").rstrip("/"),
            oidc_issuer=get("OIDC_ISSUER"),
            api_token_client_ids=_parse_list(get("API_TOKEN_CLIENT_IDS")),
            token_leeway_s=_parse_int("TOKEN_LEEWAY", get("TOKEN_LEEWAY", "30")),
            session_idle_timeout_s=_parse_int(
                "SESSION_IDLE_TIMEOUT", get("SESSION_IDLE_TIMEOUT", str(30 * 60))
            ),
            session_max_lifetime_s=_parse_int(
                "SESSION_MAX_LIFETIME", get("SESSION_MAX_LIFETIME", str(12 * 60 * 60))
            ),
            rate_limit_api=_parse_rate_limit(
                "RATE_LIMIT_API", get("RATE_LIMIT_API", "30 per second; 1200 per minute")
            ),
            rate_limit_sign_in=_parse_rate_limit(
                "RATE_LIMIT_SIGN_IN", get("RATE_LIMIT_SIGN_IN", "60 per minute")
            ),
            rate_limit_api_unauthenticated=_parse_rate_limit(
                "RATE_LIMIT_API_UNAUTHENTICATED",
                get("RATE_LIMIT_API_UNAUTHENTICATED", "30 per minute"),
            ),
            rate_limit_enabled=_parse_bool("RATE_LIMIT_ENABLED", get("RATE_LIMIT_ENABLED", "true")),
            inference_api_url=get("INFERENCE_API_URL", "http://127.0.0.1:8001").rstrip("/"),
            inference_api_token=get("INFERENCE_API_TOKEN"),
            inference_api_timeout_s=_parse_float(
                "INFERENCE_API_TIMEOUT", get("INFERENCE_API_TIMEOUT", "300")
            ),
            inference_api_connect_timeout_s=_parse_float(
                "INFERENCE_API_CONNECT_TIMEOUT", get("INFERENCE_API_CONNECT_TIMEOUT", "5")
            ),
            inference_api_read_timeout_s=_parse_float(
                "INFERENCE_API_READ_TIMEOUT", get("INFERENCE_API_READ_TIMEOUT", "60")
            ),
            inference_api_retries=_parse_int(
                "INFERENCE_API_RETRIES", get("INFERENCE_API_RETRIES", "3")
            ),
            inference_max_wait_s=_parse_float(
                "INFERENCE_MAX_WAIT", get("INFERENCE_MAX_WAIT", "3600")
            ),
            inference_breaker_failures=_parse_int(
                "INFERENCE_BREAKER_FAILURES", get("INFERENCE_BREAKER_FAILURES", "3")
            ),
            inference_breaker_cooldown_s=_parse_float(
                "INFERENCE_BREAKER_COOLDOWN", get("INFERENCE_BREAKER_COOLDOWN", "30")
            ),
            task_lease_s=_parse_float("TASK_LEASE", get("TASK_LEASE", "60")),
            task_time_limit_s=_parse_float("TASK_TIME_LIMIT", get("TASK_TIME_LIMIT", "1800")),
            sweep_interval_s=_parse_float("SWEEP_INTERVAL", get("SWEEP_INTERVAL", "30")),
            max_attempt_recoveries=_parse_int(
                "MAX_ATTEMPT_RECOVERIES", get("MAX_ATTEMPT_RECOVERIES", "3")
            ),
            convert_memory_limit_mb=_parse_int(
                "CONVERT_MEMORY_LIMIT_MB", get("CONVERT_MEMORY_LIMIT_MB", "4096")
            ),
            convert_time_limit_s=_parse_float(
                "CONVERT_TIME_LIMIT", get("CONVERT_TIME_LIMIT", "900")
            ),
            storage_retry_window_s=_parse_float(
                "STORAGE_RETRY_WINDOW", get("STORAGE_RETRY_WINDOW", "120")
            ),
            queue_delay_warning_s=_parse_float(
                "QUEUE_DELAY_WARNING", get("QUEUE_DELAY_WARNING", "600")
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
            patient_data_key=get("PATIENT_DATA_KEY").strip(),
            raw_retention_hours=_parse_int("RAW_RETENTION_HOURS", get("RAW_RETENTION_HOURS", "72")),
            s3_sse=get("S3_SSE").strip(),
            s3_sse_kms_key_id=get("S3_SSE_KMS_KEY_ID").strip(),
            debug=_parse_bool("FLASK_DEBUG", get("FLASK_DEBUG", "false")),
            proxy_fix_hops=_parse_int("PROXY_FIX_HOPS", get("PROXY_FIX_HOPS", "0")),
            log_format=_parse_log_format(get("LOG_FORMAT"), portal_env=portal_env),
            metrics_port=_parse_port("METRICS_PORT", get("METRICS_PORT", "0")),
            worker_metrics_port=_parse_port("WORKER_METRICS_PORT", get("WORKER_METRICS_PORT", "0")),
            metrics_host=get("METRICS_HOST") or "127.0.0.1",
            worker_heartbeat_file=get("WORKER_HEARTBEAT_FILE")
            or str(Path(data_dir) / "worker-heartbeat"),
            invitation_ttl_days=invitation_ttl_days,
            smtp_host=get("SMTP_HOST"),
            smtp_port=_parse_int("SMTP_PORT", get("SMTP_PORT", "587")),
            smtp_tls=smtp_tls,
            smtp_username=get("SMTP_USERNAME"),
            smtp_password=get("SMTP_PASSWORD"),
            mail_sender=get("MAIL_SENDER") or "Vizier Med <nao-responda@vizier-med.local>",
            webhook_allow_loopback_http=_parse_bool(
                "WEBHOOK_ALLOW_LOOPBACK_HTTP", get("WEBHOOK_ALLOW_LOOPBACK_HTTP", "false")
            ),
            webhook_connect_timeout_s=_parse_float(
                "WEBHOOK_CONNECT_TIMEOUT", get("WEBHOOK_CONNECT_TIMEOUT", "5")
            ),
            webhook_read_timeout_s=_parse_float(
                "WEBHOOK_READ_TIMEOUT", get("WEBHOOK_READ_TIMEOUT", "10")
            ),
        )

    def check(self) -> None:
        """Raise ConfigurationError listing every setting that stops the portal from starting."""
        problems = self.problems()
        if problems:
            raise ConfigurationError(
                "invalid configuration:\n" + "\n".join(f"- {problem}" for problem in problems)
            )

    def problems(self) -> list[str]:
        """Return one message per missing or insecure setting; production checks more."""
        problems = []
        if self.dicom_window_width <= 0:
            problems.append("DICOM_WINDOW_WIDTH must be positive")
        if self.dicom_target_slices < 2:
            problems.append("DICOM_TARGET_SLICES must be at least 2")
        if self.proxy_fix_hops < 0:
            problems.append("PROXY_FIX_HOPS must be 0 or more")
        if not 0 <= self.token_leeway_s <= 300:
            problems.append("TOKEN_LEEWAY must be between 0 and 300 seconds")
        if self.session_idle_timeout_s < 60:
            problems.append("SESSION_IDLE_TIMEOUT must be at least 60 seconds")
        if self.session_max_lifetime_s < self.session_idle_timeout_s:
            problems.append("SESSION_MAX_LIFETIME must be at least SESSION_IDLE_TIMEOUT seconds")
        if self.task_lease_s < 3:
            problems.append("TASK_LEASE must be at least 3 seconds")
        if self.inference_breaker_failures < 1:
            problems.append("INFERENCE_BREAKER_FAILURES must be at least 1")
        if self.convert_memory_limit_mb < 256:
            problems.append("CONVERT_MEMORY_LIMIT_MB must be at least 256")
        if self.viewer_native_max_bytes < 0:
            problems.append(
                "VIEWER_NATIVE_MAX_BYTES must be 0 (always the model grid) or a positive size"
            )
        if not 0 < self.webhook_connect_timeout_s <= 60:
            problems.append("WEBHOOK_CONNECT_TIMEOUT must be more than 0 and at most 60 seconds")
        if not 0 < self.webhook_read_timeout_s <= 60:
            problems.append("WEBHOOK_READ_TIMEOUT must be more than 0 and at most 60 seconds")
        if self.raw_retention_hours < 0:
            problems.append("RAW_RETENTION_HOURS must be 0 or more hours")
        if self.s3_sse not in S3_SSE_MODES:
            problems.append(
                f"S3_SSE={self.s3_sse!r} is invalid: leave it empty or use AES256 or aws:kms"
            )
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            problems.append("S3_SSE_KMS_KEY_ID is set, so S3_SSE must be aws:kms")
        if self.patient_data_key and not _is_aes256_key(self.patient_data_key):
            problems.append(
                f"PATIENT_DATA_KEY must be the base64 of 32 random bytes ({PATIENT_DATA_KEY_HINT})"
            )
        if self.is_production:
            problems.extend(self._production_problems())
        return problems

    def _production_problems(self) -> list[str]:
        problems = []
        secret = self.secret_key
        if secret.startswith(DEV_SECRET_KEY_PREFIX) or len(secret) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"SECRET_KEY is missing or shorter than {MIN_SECRET_KEY_LENGTH} characters: "
                f"set a random value ({SECRET_KEY_HINT})"
            )
        elif len(set(secret)) < MIN_SECRET_KEY_DISTINCT_CHARACTERS:
            problems.append(
                f"SECRET_KEY is insecure: it has fewer than {MIN_SECRET_KEY_DISTINCT_CHARACTERS} "
                f"distinct characters; set a random value ({SECRET_KEY_HINT})"
            )
        if self.debug:
            problems.append("FLASK_DEBUG is on: debug mode must be off in production")
        if self.webhook_allow_loopback_http:
            problems.append(
                "WEBHOOK_ALLOW_LOOPBACK_HTTP is on: webhooks to 127.0.0.1 are for development only"
            )
        if not self.portal_base_url.startswith("https://"):
            problems.append(
                f"PORTAL_BASE_URL={self.portal_base_url!r} must start with https:// in "
                "production, because session cookies are sent only over HTTPS"
            )
        if not self.database_url.startswith("postgresql"):
            problems.append(
                "DATABASE_URL must be a PostgreSQL URL (postgresql+psycopg://...) in "
                "production: SQLite cannot be shared by several containers"
            )
        if not self.redis_url:
            problems.append(
                "REDIS_URL is missing: production queues tasks in Redis, because a SQLite "
                "queue file cannot be shared by several containers"
            )
        if not self.patient_data_key:
            problems.append(
                "PATIENT_DATA_KEY is missing: production encrypts patient identifiers with "
                f"its own key, a KMS data key ({PATIENT_DATA_KEY_HINT} for a test key)"
            )
        if not self.s3_sse:
            problems.append("S3_SSE is missing: production requests AES256 or aws:kms on S3 writes")
        if not self.issuer:
            problems.append("set COGNITO_REGION and COGNITO_USER_POOL_ID, or OIDC_ISSUER")
        for name, value in (
            ("COGNITO_CLIENT_ID", self.cognito_client_id),
            ("COGNITO_CLIENT_SECRET", self.cognito_client_secret),
            ("COGNITO_DOMAIN", self.cognito_domain),
            ("INFERENCE_API_URL", self.inference_api_url),
            ("INFERENCE_API_TOKEN", self.inference_api_token),
            ("S3_BUCKET", self.s3_bucket),
        ):
            if not value:
                problems.append(f"{name} is missing")
        return problems

    def flask_config(self) -> dict:
        """Return the Flask configuration keys derived from these settings."""
        return {
            "SECRET_KEY": self.secret_key,
            "DEBUG": self.debug,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
            # The file may be up to max_upload_bytes; the rest of the form is small.
            "MAX_CONTENT_LENGTH": self.max_upload_bytes + 64 * 1024,
            "MAX_FORM_MEMORY_SIZE": 1024 * 1024,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            # Local development runs on http://127.0.0.1, where a Secure cookie is never sent.
            "SESSION_COOKIE_SECURE": self.uses_https or self.is_production,
            "SESSION_COOKIE_NAME": "__Host-session" if self.uses_https else "session",
            "PERMANENT_SESSION_LIFETIME": self.session_max_lifetime_s,
            "REMEMBER_COOKIE_HTTPONLY": True,
            "RATELIMIT_ENABLED": self.rate_limit_enabled,
            "RATELIMIT_STORAGE_URI": self.redis_url or "memory://",
            "RATELIMIT_KEY_PREFIX": "vizier-med-ratelimit",
            "RATELIMIT_HEADERS_ENABLED": True,
            "RATELIMIT_STRATEGY": "moving-window",
            "BABEL_DEFAULT_LOCALE": self.default_locale,
            "BABEL_DEFAULT_TIMEZONE": self.default_timezone,
            "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).parent / "translations"),
            "WTF_CSRF_TIME_LIMIT": None,
            "PREFERRED_URL_SCHEME": "https" if self.portal_base_url.startswith("https") else "http",
        }
