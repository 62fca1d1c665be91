"""Thread-safe job store and the background worker that runs segmentation jobs."""

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"


class JobCancelled(Exception):
    """Raised inside a running job when a client cancelled it."""


class JobError(Exception):
    """A job failure with a stable ``code`` that the status endpoint returns."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Job:
    """One segmentation job; ``directory`` keeps its input and result NPZ files."""

    job_id: str
    directory: Path
    idempotency_key: str
    request_fingerprint: str
    #: Requested label values; empty means every category of the catalogue.
    categories: tuple[int, ...] = ()
    status: str = QUEUED
    progress: int = 0
    error_code: str | None = None
    error_message: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def input_path(self) -> Path:
        return self.directory / "input.npz"

    @property
    def result_path(self) -> Path:
        return self.directory / "result.npz"

    def to_json(self) -> dict:
        error = None
        if self.error_code is not None:
            error = {"code": self.error_code, "message": self.error_message}
        return {
            "job_id": self.job_id,
            "status": self.status,
            "progress": self.progress,
            "error": error,
        }


class IdempotencyConflict(Exception):
    """Raised when an Idempotency-Key is reused with a different request body."""


class JobStore:
    """Jobs by id and by Idempotency-Key, guarded by one lock.

    NOTE: job records live in memory, so a restarted segmenter loses its jobs even though
    their files remain under the data directory.
    """

    def __init__(self, data_dir: Path):
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._job_id_by_key: dict[str, str] = {}

    def new_job_directory(self) -> tuple[str, Path]:
        """Create a directory for a job that is not registered yet and return its id."""
        job_id = uuid.uuid4().hex
        directory = self._data_dir / "jobs" / job_id
        directory.mkdir(parents=True)
        return job_id, directory

    def find_by_key(self, idempotency_key: str, request_fingerprint: str) -> Job | None:
        """Return the job created with this key, or ``None``.

        Raises ``IdempotencyConflict`` when that job was created from a different request.
        """
        with self._lock:
            job_id = self._job_id_by_key.get(idempotency_key)
            if job_id is None:
                return None
            job = self._jobs[job_id]
        if job.request_fingerprint != request_fingerprint:
            raise IdempotencyConflict(idempotency_key)
        return job

    def add_unless_key_exists(self, job: Job) -> tuple[Job, bool]:
        """Register ``job`` unless its key is taken; return the registered job and whether
        it is the new one.

        Raises ``IdempotencyConflict`` when the key belongs to a different request.
        """
        with self._lock:
            existing_id = self._job_id_by_key.get(job.idempotency_key)
            if existing_id is None:
                self._jobs[job.job_id] = job
                self._job_id_by_key[job.idempotency_key] = job.job_id
                return job, True
            existing = self._jobs[existing_id]
        if existing.request_fingerprint != job.request_fingerprint:
            raise IdempotencyConflict(job.idempotency_key)
        return existing, False

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str) -> dict | None:
        """Return the job's status document, read under the lock."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_json()

    def transition(self, job: Job, *, allowed_from: frozenset[str], to: str, **fields) -> bool:
        """Move ``job`` to status ``to`` when its status is in ``allowed_from``.

        Returns whether the change happened, so a cancel and a finishing worker cannot
        overwrite each other.
        """
        with self._lock:
            if job.status not in allowed_from:
                return False
            job.status = to
            for name, value in fields.items():
                setattr(job, name, value)
            return True

    def set_progress(self, job: Job, progress: int) -> None:
        with self._lock:
            if job.status == RUNNING:
                job.progress = max(job.progress, min(int(progress), 99))


def run_worker(
    store: JobStore,
    work_queue: "queue.Queue[Job]",
    process: Callable[[Job, Callable[[int], None]], np.ndarray],
    *,
    start_delay_s: float = 0.0,
) -> None:
    """Run queued jobs one at a time, forever; meant for a daemon thread.

    ``process`` returns the uint8 mask of a job and calls the progress callback, which
    raises ``JobCancelled`` once the job was cancelled. ``start_delay_s`` keeps each job
    running that long before the work starts, to imitate a slow remote provider.
    """
    while True:
        job = work_queue.get()
        try:
            _run_job(store, job, process, start_delay_s=start_delay_s)
        finally:
            work_queue.task_done()


def _run_job(store, job, process, *, start_delay_s):
    if not store.transition(job, allowed_from=frozenset({QUEUED}), to=RUNNING, progress=1):
        logger.info("job %s skipped: status is %s", job.job_id, job.status)
        return
    logger.info("job %s started", job.job_id)

    def report_progress(percent: int) -> None:
        if job.cancel_requested.is_set():
            raise JobCancelled(job.job_id)
        store.set_progress(job, percent)

    try:
        _wait_with_progress(start_delay_s, report_progress)
        mask = process(job, report_progress)
        report_progress(95)
        _write_result(job.result_path, mask)
    except JobCancelled:
        logger.info("job %s stopped after cancellation", job.job_id)
        return
    except JobError as error:
        store.transition(
            job,
            allowed_from=frozenset({RUNNING}),
            to=FAILED,
            error_code=error.code,
            error_message=error.message,
        )
        logger.info("job %s failed: %s", job.job_id, error.code)
        return
    except Exception:
        logger.exception("job %s failed with an unexpected error", job.job_id)
        store.transition(
            job,
            allowed_from=frozenset({RUNNING}),
            to=FAILED,
            error_code="internal_error",
            error_message="the segmenter failed with an unexpected error",
        )
        return
    if store.transition(job, allowed_from=frozenset({RUNNING}), to=SUCCEEDED, progress=100):
        logger.info("job %s succeeded", job.job_id)
    else:
        job.result_path.unlink(missing_ok=True)
        logger.info("job %s finished after cancellation; result discarded", job.job_id)


def _wait_with_progress(delay_s: float, report_progress: Callable[[int], None]) -> None:
    deadline = time.monotonic() + delay_s
    while (remaining := deadline - time.monotonic()) > 0:
        # The simulated delay covers the first 20 % of the progress bar.
        report_progress(1 + int(19 * (1 - remaining / delay_s)))
        time.sleep(min(remaining, 0.05))


def _write_result(path: Path, mask: np.ndarray) -> None:
    labels = np.unique(mask)
    labels = labels[labels != 0].astype(np.int32)
    temporary = path.with_suffix(".partial.npz")
    with temporary.open("wb") as output:
        np.savez(output, mask=mask, labels=labels)
    temporary.replace(path)
