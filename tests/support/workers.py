"""Worker processes a test starts, kills with SIGKILL or stops, and the rows it watches."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, event, text

from portal.tenancy import ALL_CLINICS, CLINIC_SETTING

from scripts.devstack import ROOT, VENV_BIN

TERMINAL = ("succeeded", "failed", "cancelled")


class Workers:
    """`flask --app wsgi worker` processes in the stack's environment, each in its own session."""

    def __init__(self, env: dict, log_dir: Path):
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, *, workers: int = 1) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{len(self.processes) + 1}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [str(VENV_BIN / "flask"), "--app", "wsgi", "worker", "--workers", str(workers)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the worker and its children at once, as a lost machine would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("worker-*.log"))
        )


class Rows:
    """Read the portal's database directly, to watch attempts without going through the API."""

    def __init__(self, database_url: str):
        self.engine = create_engine(database_url)
        if self.engine.dialect.name == "postgresql":
            # Row-level security hides every row from a session that names no clinic;
            # this watcher reads attempts of any clinic.
            @event.listens_for(self.engine, "connect")
            def read_all_clinics(dbapi_connection, connection_record):
                with dbapi_connection.cursor() as cursor:
                    cursor.execute(f"SET {CLINIC_SETTING} = '{ALL_CLINICS}'")
                dbapi_connection.commit()

    def attempts(self, study_id: str) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, number, status, recovery_count, inference_job_id, error_code, "
                    "finished_at "
                    "FROM attempt WHERE study_id = :study ORDER BY number"
                ),
                {"study": _uuid_param(self.engine, study_id)},
            )
            return [dict(row._mapping) for row in rows]

    def count_artifacts(self, study_id: str, kind: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                text("SELECT count(*) FROM artifact WHERE study_id = :study AND kind = :kind"),
                {"study": _uuid_param(self.engine, study_id), "kind": kind},
            ).scalar_one()

    def wait_for(self, study_id: str, predicate, *, timeout_s: float, poll_s: float = 0.05):
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            attempts = self.attempts(study_id)
            latest = attempts[-1] if attempts else None
            if latest and (not seen or seen[-1] != latest["status"]):
                seen.append(latest["status"])
            if latest and predicate(latest):
                return latest
            time.sleep(poll_s)
        raise AssertionError(f"study {study_id} did not reach the state in {timeout_s} s: {seen}")

    def close(self) -> None:
        self.engine.dispose()


def _uuid_param(engine, value: str):
    # SQLite stores sa.Uuid as 32 hex digits without dashes.
    return value.replace("-", "") if engine.dialect.name == "sqlite" else value
