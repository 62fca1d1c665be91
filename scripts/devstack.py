"""Start the portal's processes on one machine: S3, identity provider, segmenter, worker, web.

`make run` uses it with the ports and secrets of `.env`; the end-to-end tests use it with
free ports and a temporary folder, so a running `make run` never disturbs them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

logger = logging.getLogger("devstack")


@dataclass
class Service:
    name: str
    command: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: int = 0


@dataclass
class Stack:
    """The local processes, built from one environment (the contents of `.env`)."""

    env: Mapping[str, str]
    log_dir: Path
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = dict(self.env)
        data_dir = Path(env["DATA_DIR"])
        s3_root = data_dir / "s3"
        (s3_root / env["S3_BUCKET"]).mkdir(parents=True, exist_ok=True)
        base = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        web_port = int(env["WEB_PORT"])
        self.services = [
            Service(
                "storage",
                [
                    _rclone(),
                    "serve",
                    "s3",
                    str(s3_root),
                    "--addr",
                    f"127.0.0.1:{env['S3_PORT']}",
                    "--auth-key",
                    f"{env['AWS_ACCESS_KEY_ID']},{env['AWS_SECRET_ACCESS_KEY']}",
                    "--allow-origin",
                    env["PORTAL_BASE_URL"],
                    "--config",
                    "/dev/null",
                ],
                int(env["S3_PORT"]),
                base,
                self.log_dir / "storage.log",
            ),
            Service(
                "idp",
                ["node", str(ROOT / "devidp" / "server.mjs")],
                int(env["IDP_PORT"]),
                base
                | {
                    "DEVIDP_HOST": "127.0.0.1",
                    "DEVIDP_PORT": env["IDP_PORT"],
                    "DEVIDP_ISSUER": env["OIDC_ISSUER"],
                    "DEVIDP_CLIENT_ID": env["COGNITO_CLIENT_ID"],
                    "DEVIDP_CLIENT_SECRET": env["COGNITO_CLIENT_SECRET"],
                    "DEVIDP_REDIRECT_URIS": f"{env['PORTAL_BASE_URL']}/auth/callback",
                    "DEVIDP_LOGOUT_URIS": f"{env['PORTAL_BASE_URL']}/auth/signed-out",
                    "DEVIDP_KEYS_FILE": str(data_dir / "devidp-keys.json"),
                },
                self.log_dir / "idp.log",
            ),
            Service(
                "segmenter",
                [
                    sys.executable,
                    "-m",
                    "segmenter",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    env["SEGMENTER_PORT"],
                ],
                int(env["SEGMENTER_PORT"]),
                base
                | {
                    "SEGMENTER_TOKEN": env["INFERENCE_API_TOKEN"],
                    "SEGMENTER_DATA_DIR": str(data_dir / "segmenter"),
                },
                self.log_dir / "segmenter.log",
            ),
            Service(
                "worker",
                [str(VENV_BIN / "flask"), "--app", "wsgi", "worker"],
                0,
                base | worker_metrics_env(env, data_dir),
                self.log_dir / "worker.log",
            ),
            Service(
                "web",
                [
                    str(VENV_BIN / "gunicorn"),
                    "--config",
                    str(ROOT / "gunicorn.conf.py"),
                    "--bind",
                    f"127.0.0.1:{web_port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "600",
                    "--graceful-timeout",
                    "20",
                    "wsgi:app",
                ],
                web_port,
                base,
                self.log_dir / "web.log",
            ),
        ]

    def start(self, *, timeout_s: float = 60.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            self._start(service)
            if service.port:
                _wait_for_port(service, timeout_s)
            logger.info("%s started (pid %d)", service.name, service.process.pid)

    def _start(self, service: Service) -> None:
        log = open(service.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        service.process = subprocess.Popen(
            service.command,
            cwd=ROOT,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def restart_dead(self, *, max_restarts: int = 5) -> list[str]:
        """Restart each process that exited; return the names of those restarted."""
        restarted = []
        for service in self.services:
            if service.process is None or service.process.poll() is None:
                continue
            if service.restarts >= max_restarts:
                raise RuntimeError(
                    f"{service.name} keeps exiting (code {service.process.returncode}); "
                    f"see {service.log_path}"
                )
            logger.warning(
                "%s exited with code %s; restarting", service.name, service.process.returncode
            )
            service.restarts += 1
            self._start(service)
            restarted.append(service.name)
        return restarted

    def stop(self) -> None:
        for service in reversed(self.services):
            process = service.process
            if process is None or process.poll() is not None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 20
        for service in reversed(self.services):
            process = service.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def service(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)


def worker_metrics_env(env: dict[str, str], data_dir: Path) -> dict[str, str]:
    """Return the variables that let the worker's child processes report metrics.

    Tasks run in child processes, so their samples reach the worker's metrics endpoint
    only through prometheus_client's multiprocess files, and the folder must be named
    before the worker imports prometheus_client.
    """
    if env.get("WORKER_METRICS_PORT", "0") in ("", "0"):
        return {}
    return {"PROMETHEUS_MULTIPROC_DIR": str(data_dir / "worker-metrics")}


def _rclone() -> str:
    candidate = VENV_BIN / "rclone"
    return str(candidate) if candidate.exists() else (shutil.which("rclone") or "rclone")


def _wait_for_port(service: Service, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with code {service.process.returncode} while starting; "
                f"see {service.log_path}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            listening = sock.connect_ex(("127.0.0.1", service.port)) == 0
        if listening:
            # A process that could not bind exits at once; then another program owns the port.
            time.sleep(0.5)
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode}: port "
                    f"{service.port} is probably used by another program; see {service.log_path}"
                )
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"{service.name} did not listen on port {service.port}; see {service.log_path}"
    )


def run_flask(env: Mapping[str, str], *args: str) -> str:
    """Run `flask --app wsgi ARGS` in the stack's environment and return its stdout."""
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()
