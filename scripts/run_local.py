"""`make run`: write `.env` on first start, migrate, seed the demo clinic, start every process.

Ctrl-C stops them all. A process that dies is restarted, and the others keep running.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import signal
import sys
import time
from pathlib import Path

from dotenv import dotenv_values

from scripts.devstack import ROOT, Stack, run_flask

ENV_PATH = ROOT / ".env"
DEMO_ACCOUNTS = ROOT / "portal" / "data" / "demo_accounts.json"

logger = logging.getLogger("run")


def default_env() -> dict[str, str]:
    """Return the settings of a first start: local URLs and freshly generated secrets."""
    web_port, s3_port, idp_port, segmenter_port = "8000", "9000", "9010", "8001"
    return {
        "PORTAL_ENV": "development",
        "SECRET_KEY": secrets.token_hex(32),
        "PATIENT_DATA_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "WEB_PORT": web_port,
        "S3_PORT": s3_port,
        "IDP_PORT": idp_port,
        "SEGMENTER_PORT": segmenter_port,
        "PORTAL_BASE_URL": f"http://127.0.0.1:{web_port}",
        "DATA_DIR": str(ROOT / "var"),
        "DATABASE_URL": f"sqlite:///{ROOT / 'var' / 'portal.sqlite3'}",
        "S3_BUCKET": "vizier-med",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_REGION": "sa-east-1",
        "AWS_ACCESS_KEY_ID": "local" + secrets.token_hex(8),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "OIDC_ISSUER": f"http://127.0.0.1:{idp_port}",
        "COGNITO_DOMAIN": f"http://127.0.0.1:{idp_port}",
        "COGNITO_CLIENT_ID": "vizier-med-portal",
        "COGNITO_CLIENT_SECRET": secrets.token_hex(24),
        "INFERENCE_API_URL": f"http://127.0.0.1:{segmenter_port}",
        "INFERENCE_API_TOKEN": secrets.token_hex(24),
    }


def ensure_env_file() -> dict[str, str]:
    if not ENV_PATH.exists():
        lines = ["# Written by `make run` on first start; later starts reuse it. See .env.example."]
        lines += [f"{name}={value}" for name, value in default_env().items()]
        ENV_PATH.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ENV_PATH.chmod(0o600)
        logger.info("wrote %s with new secrets", ENV_PATH.name)
    values = {name: value for name, value in dotenv_values(ENV_PATH).items() if value is not None}
    if _missing(values):
        # Settings added to the defaults after `.env` was written are appended to it, so a
        # generated key (PATIENT_DATA_KEY) stays the same on the next start.
        added = {name: value for name, value in default_env().items() if name not in values}
        with ENV_PATH.open("a", encoding="utf-8") as env_file:
            env_file.write("".join(f"{name}={value}\n" for name, value in added.items()))
        logger.info("added %s to %s", ", ".join(sorted(added)), ENV_PATH.name)
        values = values | added
    return values


def _missing(values: dict[str, str]) -> bool:
    return any(name not in values for name in default_env())


def print_banner(env: dict[str, str]) -> None:
    accounts = json.loads(DEMO_ACCOUNTS.read_text(encoding="utf-8"))["accounts"]
    print()
    print(f"  Vizier Med portal: {env['PORTAL_BASE_URL']}")
    print("  Demo accounts (dev identity provider):")
    for account in accounts:
        print(f"    {account['role']:<7} {account['username']:<8} password {account['password']}")
    print("  Press Ctrl-C to stop every process.")
    print(flush=True)


def _stop_on_signal(signal_number, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    env = ensure_env_file()
    Path(env["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    run_flask(env, "db", "upgrade")
    run_flask(env, "demo", "seed")
    stack = Stack(env=env, log_dir=Path(env["DATA_DIR"]) / "logs")
    # `kill` or a closed terminal stops every process, not only this supervisor, because
    # each service runs in a session of its own and would outlive it.
    for signal_number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, _stop_on_signal)
    try:
        stack.start()
        print_banner(env)
        logger.info("logs are in %s", stack.log_dir)
        while True:
            time.sleep(1)
            stack.restart_dead()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
