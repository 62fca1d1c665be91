"""HTTP layer of the reference segmenter: the inference API contract on Flask."""

import hashlib
import hmac
import logging
import queue
import re
import shutil
import threading
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from segmenter.catalogue import load_label_values
from segmenter.ct import segment_ct
from segmenter.jobs import (
    CANCELLED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    IdempotencyConflict,
    Job,
    JobError,
    JobStore,
    run_worker,
)
from segmenter.volume import InvalidVolume, check_label_values, load_volume

logger = logging.getLogger(__name__)

#: Default maximum voxel count of an input image: 512 x 512 x 512 float32 is 512 MiB.
DEFAULT_MAX_VOXELS = 512 * 512 * 512
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
MAX_IDEMPOTENCY_KEY_LENGTH = 200
UPLOAD_CHUNK_BYTES = 1024 * 1024


class ApiError(Exception):
    """An error response: HTTP status, stable code and English message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def create_app(
    *,
    token: str,
    data_dir: Path,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    job_delay_s: float = 0.0,
) -> Flask:
    """Build the segmenter app and start its worker thread.

    ``token`` is the bearer token clients must send, ``data_dir`` keeps job inputs and
    results, and ``job_delay_s`` makes every job run that much longer, to imitate a slow
    provider during development and tests.
    """
    if not token:
        raise ValueError("the segmenter needs a non-empty bearer token")
    label_values = load_label_values()
    known_labels = set(label_values.values())
    store = JobStore(data_dir)
    work_queue: queue.Queue[Job] = queue.Queue()

    def process(job: Job, report_progress) -> object:
        volume = load_volume(job.input_path, max_voxels=max_voxels, known_labels=known_labels)
        if volume.modality != "CT":
            raise JobError(
                "modality_not_supported",
                f"the reference segmenter handles CT only, not {volume.modality}",
            )
        requested = set(job.categories) or known_labels
        selected = {key: value for key, value in label_values.items() if value in requested}
        return segment_ct(volume.image, volume.spacing_mm, selected, on_progress=report_progress)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_voxels * 4 + UPLOAD_CHUNK_BYTES

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return jsonify(code=error.code, message=error.message), error.status

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        code = (error.name or "http_error").lower().replace(" ", "_")
        return jsonify(code=code, message=error.description), error.code

    @app.before_request
    def check_token():
        if request.path.startswith("/v1/jobs"):
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), token.encode()
            ):
                raise ApiError(401, "unauthorized", "missing or invalid bearer token")

    @app.get("/v1/health")
    def health():
        return jsonify(status="ok")

    @app.post("/v1/jobs")
    def submit_job():
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(
                400,
                "invalid_idempotency_key",
                f"the Idempotency-Key header is required, at most "
                f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            )
        upload = request.files.get("volume")
        if upload is None:
            raise ApiError(400, "missing_volume", "the multipart field 'volume' is missing")
        form_categories = _parse_form_categories(request.form.getlist("categories"))

        job_id, directory = store.new_job_directory()
        try:
            job = _accept_upload(upload, form_categories, job_id, directory, idempotency_key)
            registered, created = store.add_unless_key_exists(job)
        except IdempotencyConflict:
            shutil.rmtree(directory, ignore_errors=True)
            raise ApiError(
                409,
                "idempotency_key_conflict",
                "this Idempotency-Key was already used for a different request",
            ) from None
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        if not created:
            shutil.rmtree(directory, ignore_errors=True)
            logger.info("job %s returned again for a repeated Idempotency-Key", registered.job_id)
            return jsonify(store.snapshot(registered.job_id)), 200
        work_queue.put(registered)
        logger.info("job %s queued", registered.job_id)
        return jsonify(store.snapshot(registered.job_id)), 202

    def _accept_upload(upload, form_categories, job_id, directory, idempotency_key) -> Job:
        job = Job(
            job_id=job_id,
            directory=directory,
            idempotency_key=idempotency_key,
            request_fingerprint="",
        )

        digest = hashlib.sha256()
        with job.input_path.open("wb") as output:
            while chunk := upload.stream.read(UPLOAD_CHUNK_BYTES):
                digest.update(chunk)
                output.write(chunk)
        digest.update(repr(form_categories).encode())
        job.request_fingerprint = digest.hexdigest()

        # A repeated request gets the existing job before validating the upload a second time.
        existing = store.find_by_key(idempotency_key, job.request_fingerprint)
        if existing is not None:
            return existing
        try:
            volume = load_volume(job.input_path, max_voxels=max_voxels, known_labels=known_labels)
        except InvalidVolume as error:
            raise ApiError(400, error.code, error.message) from None

        categories = volume.categories
        if form_categories is not None:
            if volume.categories and set(volume.categories) != set(form_categories):
                raise ApiError(
                    400,
                    "categories_mismatch",
                    f"form categories {list(form_categories)} differ from the NPZ categories "
                    f"{list(volume.categories)}",
                )
            try:
                categories = check_label_values(list(form_categories), known_labels=known_labels)
            except InvalidVolume as error:
                raise ApiError(400, error.code, error.message) from None
        job.categories = categories
        return job

    @app.get("/v1/jobs/<job_id>")
    def get_job(job_id: str):
        return jsonify(_snapshot_or_404(job_id))

    @app.get("/v1/jobs/<job_id>/result")
    def get_result(job_id: str):
        snapshot = _snapshot_or_404(job_id)
        if snapshot["status"] != SUCCEEDED:
            raise ApiError(
                409,
                "job_not_succeeded",
                f"job {job_id} has status {snapshot['status']}; a result exists only "
                "after it succeeded",
            )
        job = store.get(job_id)
        return send_file(job.result_path, mimetype="application/octet-stream")

    @app.delete("/v1/jobs/<job_id>")
    def cancel_job(job_id: str):
        job = store.get(job_id) if JOB_ID_PATTERN.match(job_id) else None
        if job is None:
            raise ApiError(404, "job_not_found", f"job {job_id} does not exist")
        job.cancel_requested.set()
        changed = store.transition(
            job, allowed_from=frozenset({QUEUED, RUNNING, CANCELLED}), to=CANCELLED
        )
        if not changed:
            raise ApiError(
                409,
                "job_already_finished",
                f"job {job_id} already has status {job.status} and cannot be cancelled",
            )
        logger.info("job %s cancelled", job_id)
        return jsonify(store.snapshot(job_id))

    def _snapshot_or_404(job_id: str) -> dict:
        snapshot = store.snapshot(job_id) if JOB_ID_PATTERN.match(job_id) else None
        if snapshot is None:
            raise ApiError(404, "job_not_found", f"job {job_id} does not exist")
        return snapshot

    worker = threading.Thread(
        target=run_worker,
        args=(store, work_queue, process),
        kwargs={"start_delay_s": job_delay_s},
        name="segmenter-worker",
        daemon=True,
    )
    worker.start()
    return app


def _parse_form_categories(values: list[str]) -> tuple[int, ...] | None:
    """Return the repeated ``categories`` form values as ints, or ``None`` when absent."""
    if not values:
        return None
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise ApiError(
            400, "invalid_categories", f"categories must be integer label values, not {values}"
        ) from None
