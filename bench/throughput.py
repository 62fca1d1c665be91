"""Upload N copies of the 3-slice chest study at once and report studies per minute.

Run from the repository root: ``python -m bench.throughput --studies 20 --workers 2``.
It starts the whole portal on free 127.0.0.1 ports (PostgreSQL database, RedisHuey,
rclone S3, the reference segmenter, gunicorn) plus the given number of worker processes,
uploads every study through the API from several threads, and waits until each reaches a
terminal status. Needs PostgreSQL and Redis on 127.0.0.1 and ``../shared/dicom/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from scripts.devstack import run_flask
from tests.support.stack import running_stack
from tests.support.workers import TERMINAL, Rows, Workers

CHEST_ZIP = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "dicom"
    / ("ct_chest_3slice_with_reference_segmentations.zip")
)
#: A smaller grid than the production default keeps the load run short; the queueing,
#: leasing and storage work per study are the same.
LOAD_SETTINGS = {"DICOM_TARGET_HW": "(256, 256)", "DICOM_TARGET_SLICES": "32"}


@dataclass(frozen=True)
class LoadResult:
    studies: int
    workers: int
    statuses: dict[str, int]
    attempts_per_study: list[int]
    provider_jobs: int
    mask_artifacts: int
    upload_s: float
    total_s: float

    @property
    def studies_per_minute(self) -> float:
        return 60.0 * self.studies / self.total_s


def run_load(tmp_path: Path, *, studies: int, workers: int, timeout_s: float = 900) -> LoadResult:
    """Run the load described in the module docstring and return what happened."""
    with running_stack(
        tmp_path, backend="postgresql", without=("worker",), **LOAD_SETTINGS
    ) as stack:
        env = dict(stack.env)
        clinic = run_flask(env, "clinics", "create", "Clínica Carga", "--seats", "3")
        key = run_flask(env, "api-keys", "create", "--clinic", clinic, "--name", "bench")
        headers = {"Authorization": f"Bearer {key}"}
        base_url = env["PORTAL_BASE_URL"]
        pool = Workers(env, tmp_path / "logs")
        rows = Rows(env["DATABASE_URL"])
        try:
            for _ in range(workers):
                pool.start(workers=1)
            data = CHEST_ZIP.read_bytes()

            def upload(index: int) -> str:
                response = requests.post(
                    f"{base_url}/api/studies/",
                    headers=headers,
                    files={"file": (f"study-{index}.zip", data, "application/zip")},
                    timeout=120,
                )
                response.raise_for_status()
                return response.json()["id"]

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=5) as executor:
                study_ids = list(executor.map(upload, range(studies)))
            upload_s = time.monotonic() - started
            finals = [
                rows.wait_for(
                    study_id,
                    lambda latest: latest["status"] in TERMINAL,
                    timeout_s=max(1.0, timeout_s - (time.monotonic() - started)),
                    poll_s=0.5,
                )
                for study_id in study_ids
            ]
            total_s = time.monotonic() - started
            statuses: dict[str, int] = {}
            for final in finals:
                statuses[final["status"]] = statuses.get(final["status"], 0) + 1
            jobs_dir = Path(env["DATA_DIR"]) / "segmenter" / "jobs"
            return LoadResult(
                studies=studies,
                workers=workers,
                statuses=statuses,
                attempts_per_study=[len(rows.attempts(study_id)) for study_id in study_ids],
                provider_jobs=len(list(jobs_dir.iterdir())) if jobs_dir.exists() else 0,
                mask_artifacts=sum(rows.count_artifacts(s, "mask_nifti") for s in study_ids),
                upload_s=upload_s,
                total_s=total_s,
            )
        finally:
            pool.stop_all()
            rows.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="studies uploaded at once")
    parser.add_argument("--workers", type=int, default=2, help="worker processes started")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throughput-") as work:
        result = run_load(Path(work), studies=args.studies, workers=args.workers)
    report = asdict(result) | {
        "studies_per_minute": round(result.studies_per_minute, 2),
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
