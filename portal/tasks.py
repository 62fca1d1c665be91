"""Huey tasks that move an attempt through its steps. Each takes ids only and can run twice.

Every step follows the same frame (`_run_step`): load the attempt, claim it with a
lease (`portal.leases`), do the work, then move the attempt on and queue the next step
in one guarded write. A second delivery of a task finds the attempt already past its
step, or held by a live lease, and returns. A worker that dies leaves a lease that
expires, and the sweeper (`portal.sweeper`) queues the step again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from flask import Flask, current_app, has_app_context
from huey import crontab

from portal.db_types import utcnow
from portal.extensions import db
from portal.leases import CONVERT, INFER, WRITE_RESULTS, Lease, LeaseLost, Step, claim
from portal.metrics import count_inference_error, observe_step
from portal.queue import huey
from portal.storage import StorageUnavailable
from portal.studies.models import (
    ARTIFACT_FILE_NAMES,
    STATUS_PROGRESS,
    Artifact,
    ArtifactKind,
    Attempt,
    StudyStatus,
)
from portal.tenancy import set_clinic_of

logger = logging.getLogger(__name__)

INFERENCE_RESULT_FILE_NAME = "inference_result.npz"
PROCESSING_INTERRUPTED = "processing_interrupted"
PROCESSING_TIMED_OUT = "processing_timed_out"
STORAGE_UNAVAILABLE = "storage_unavailable"
#: Minute of each hour at which the audit chain heads are anchored in object storage.
AUDIT_ANCHOR_MINUTE = 7
#: Inference progress (0-100 at the provider) fills this part of the study's progress bar.
INFERENCE_PROGRESS_START, INFERENCE_PROGRESS_END = 40, 90

_task_app: Flask | None = None
_task_app_pid: int | None = None


class TaskTimeLimitExceeded(Exception):
    """A step ran longer than TASK_TIME_LIMIT in a worker process."""


def set_task_app(app: Flask) -> None:
    """Make tasks run in `app`; the worker command calls it once with the app it built."""
    global _task_app, _task_app_pid
    _task_app = app
    _task_app_pid = os.getpid()


def _app() -> Flask:
    global _task_app, _task_app_pid
    if has_app_context():
        return current_app._get_current_object()
    if _task_app is None:
        from portal.app import create_app

        set_task_app(create_app())
    if _task_app_pid != os.getpid():
        # A forked worker process must not share the parent's database connections.
        with _task_app.app_context():
            db.engine.dispose(close=False)
        _task_app_pid = os.getpid()
    return _task_app


#: Step names as the metrics report them.
METRIC_STEP_NAMES = {"convert": "convert", "infer": "inference", "write_results": "results"}


def load_attempt(attempt_id: str) -> Attempt | None:
    """Load the attempt a task names; the one place where a task first reads its row."""
    try:
        attempt_uuid = uuid.UUID(attempt_id)
    except ValueError:
        logger.error("task with an invalid attempt id dropped")
        return None
    # Narrow the session to the attempt's clinic before any other row is read, so
    # PostgreSQL row-level security applies to the whole task.
    set_clinic_of(Attempt, attempt_uuid)
    attempt = db.session.get(Attempt, attempt_uuid, populate_existing=True)
    if attempt is None:
        logger.info("attempt %s no longer exists; task dropped", attempt_id)
    return attempt


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TaskTimeLimitExceeded in the block after `seconds`.

    NOTE: only a task running in its process's main thread can be interrupted (process
    workers, the default). Thread workers run without this limit; their leases still
    expire when a step hangs, and the sweeper gives the attempt to another worker.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TaskTimeLimitExceeded(f"task ran longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_step(attempt_id: str, step: Step, work: Callable[[Attempt, Lease], None]) -> None:
    """Claim the attempt for `step`, run `work`, and map every way it can end."""
    settings = current_app.config["PORTAL_SETTINGS"]
    attempt = load_attempt(attempt_id)
    if attempt is None:
        return
    if attempt.status.is_terminal:
        logger.info("attempt %s is %s; step %s skipped", attempt.id, attempt.status, step.name)
        return
    lease = claim(attempt.id, step, duration_s=settings.task_lease_s)
    if lease is None:
        return
    attempt = db.session.get(Attempt, attempt.id, populate_existing=True)
    try:
        if lease.recovered and attempt.recovery_count > settings.max_attempt_recoveries:
            logger.error(
                "attempt %s lost its worker %d times in %s; failing it",
                attempt.id,
                attempt.recovery_count,
                step.name,
            )
            _fail(lease, PROCESSING_INTERRUPTED)
            return
        started = time.perf_counter()
        outcome = "error"
        try:
            with time_limit(settings.task_time_limit_s):
                work(attempt, lease)
            ended = db.session.get(Attempt, attempt.id, populate_existing=True)
            outcome = "error" if ended is not None and ended.status == StudyStatus.FAILED else "ok"
        finally:
            observe_step(
                METRIC_STEP_NAMES[step.name],
                outcome=outcome,
                duration_s=time.perf_counter() - started,
            )
    except LeaseLost:
        logger.info("attempt %s left %s: cancelled or taken over", attempt_id, step.name)
    except KeyboardInterrupt:
        # The worker is stopping (SIGTERM or SIGINT): give the attempt back at once.
        if lease.hand_back():
            _queue_step(attempt_id, step)
        raise
    except TaskTimeLimitExceeded:
        logger.error("attempt %s: %s exceeded the task time limit", attempt_id, step.name)
        _fail(lease, PROCESSING_TIMED_OUT)
    except StorageUnavailable:
        _retry_later(lease, attempt, settings, code=STORAGE_UNAVAILABLE)
    except Exception:
        logger.exception("%s of attempt %s failed unexpectedly", step.name, attempt_id)
        _fail(lease, "internal_error")
    finally:
        lease.stop_renewing()


def _fail(lease: Lease, code: str, detail: dict | None = None) -> None:
    db.session.rollback()
    try:
        lease.finish(StudyStatus.FAILED, error_code=code, error_detail=detail or {})
    except LeaseLost:
        logger.info("attempt %s was not failed: it already moved on", lease.attempt_id)
        return
    logger.warning("attempt %s failed at %s: %s", lease.attempt_id, lease.step.name, code)


def _retry_later(lease: Lease, attempt: Attempt, settings, *, code: str) -> None:
    """Hand a step that hit a transient outage back, or fail it after too many tries."""
    if attempt.recovery_count >= settings.max_attempt_recoveries:
        _fail(lease, code)
        return
    if lease.hand_back(count_recovery=True):
        delay_s = min(settings.storage_retry_window_s, 300.0)
        _queue_step(str(attempt.id), lease.step, delay_s=delay_s)
        logger.warning(
            "attempt %s: %s retried in %.0f s (%s)", attempt.id, lease.step.name, delay_s, code
        )


def _queue_step(attempt_id: str, step: Step, *, delay_s: float = 0.0) -> None:
    task = {CONVERT: convert_attempt, INFER: run_inference, WRITE_RESULTS: write_results}[step]
    if delay_s > 0:
        task.schedule(kwargs={"attempt_id": attempt_id}, delay=delay_s)
    else:
        task(attempt_id=attempt_id)


def queue_step_for_status(attempt_id: str, status: StudyStatus) -> None:
    """Queue the step that continues an attempt in `status` (used by the sweeper)."""
    from portal.leases import STEP_FOR_STATUS

    _queue_step(attempt_id, STEP_FOR_STATUS[status])


def _store_artifact(
    attempt: Attempt, kind: ArtifactKind, path: Path, *, content_type: str
) -> Artifact:
    """Upload a file of the attempt and return its (not yet added) artifact row."""
    from portal.storage import study_object_key

    storage = current_app.extensions["portal_storage"]
    key = study_object_key(
        attempt.clinic_id, attempt.study_id, ARTIFACT_FILE_NAMES[kind], attempt_id=attempt.id
    )
    size_bytes = storage.publish_file(path, key, content_type=content_type)
    return Artifact(
        study_id=attempt.study_id,
        attempt_id=attempt.id,
        clinic_id=attempt.clinic_id,
        kind=kind,
        storage_key=key,
        size_bytes=size_bytes,
        content_type=content_type,
    )


@huey.task()
def convert_attempt(*, attempt_id: str) -> None:
    """Convert the study's ZIP into the inference NPZ, the image NIfTI and the report."""
    with _app().app_context():
        _run_step(attempt_id, CONVERT, _convert)


def _convert(attempt: Attempt, lease: Lease) -> None:
    from portal.categories import categories_by_key
    from portal.isolation import ConversionFailed, ConversionLimitExceeded, convert_in_child
    from portal.privacy.identifiers import seal_identifiers

    settings = current_app.config["PORTAL_SETTINGS"]
    storage = current_app.extensions["portal_storage"]
    study = attempt.study
    upload = study.artifact(ArtifactKind.UPLOAD)
    catalogue = categories_by_key()
    category_values = [
        catalogue[key].value for key in study.requested_categories if key in catalogue
    ]
    with tempfile.TemporaryDirectory(prefix="convert-", dir=settings.data_dir) as work:
        work_dir = Path(work)
        zip_path = storage.download_file(upload.storage_key, work_dir / "upload.zip")
        lease.check()
        try:
            result = convert_in_child(
                zip_path,
                work_dir / "out",
                memory_limit_mb=settings.convert_memory_limit_mb,
                time_limit_s=settings.convert_time_limit_s,
                options={
                    "target_hw": list(settings.dicom_target_hw),
                    "target_slices": settings.dicom_target_slices,
                    "window_center": settings.dicom_window_center,
                    "window_width": settings.dicom_window_width,
                    "series_id": attempt.requested_series_id,
                    "categories": category_values,
                    # Native-resolution viewer: past this size only the model grid is stored.
                    "native_max_bytes": settings.viewer_native_max_bytes,
                },
            )
        except ConversionFailed as error:
            _fail(lease, error.code, _safe_params(error.params))
            return
        except ConversionLimitExceeded as error:
            _fail(lease, error.code, {})
            return
        lease.check()
        outputs = [
            (ArtifactKind.VOLUME_NPZ, result.npz_path, "application/octet-stream"),
            (ArtifactKind.IMAGE_NIFTI, result.image_path, "application/gzip"),
            (ArtifactKind.REPORT_JSON, result.report_path, "application/json"),
        ]
        # Native-resolution viewer: store native.nii.gz when the pipeline wrote it.
        if result.native_path is not None:
            outputs.append((ArtifactKind.NATIVE_NIFTI, result.native_path, "application/gzip"))
        artifacts = [
            _store_artifact(attempt, kind, path, content_type=content_type)
            for kind, path, content_type in outputs
        ]
    db.session.add_all(artifacts)
    seal_identifiers(study, result.identifiers)
    study.modality = result.modality
    study.series_description = (result.series_description or "")[:200]
    study.slice_count = result.slice_count
    lease.finish(
        StudyStatus.INFERENCE_QUEUED, chosen_series_id=result.series_id, report=result.report
    )
    logger.info("attempt %s converted (series %s)", attempt.id, result.series_id)
    run_inference(attempt_id=str(attempt.id))


@huey.task()
def run_inference(*, attempt_id: str) -> None:
    """Submit the NPZ to the inference API, follow the job and keep its result NPZ."""
    with _app().app_context():
        _run_step(attempt_id, INFER, _infer)


def _infer(attempt: Attempt, lease: Lease) -> None:
    from portal.breaker import inference_breaker
    from portal.inference.client import InferenceError
    from portal.inference.errors import INFERENCE_REJECTED, INFERENCE_UNAVAILABLE
    from portal.storage import study_object_key

    settings = current_app.config["PORTAL_SETTINGS"]
    storage = current_app.extensions["portal_storage"]
    breaker = inference_breaker(settings)
    decision = breaker.before_call(lease.token)
    if not decision.allowed:
        _wait_for_provider(attempt, lease, settings, delay_s=decision.retry_after_s)
        return

    volume = attempt.study.artifact(ArtifactKind.VOLUME_NPZ, attempt)
    job_id = attempt.inference_job_id
    client = build_inference_client(settings)

    def record_progress(status) -> None:
        share = max(0, min(100, status.progress or 0)) / 100
        span = INFERENCE_PROGRESS_END - INFERENCE_PROGRESS_START
        progress = INFERENCE_PROGRESS_START + int(round(share * span))
        if progress != attempt.progress:
            attempt.progress = progress
            lease.update(progress=progress)

    try:
        with client, tempfile.TemporaryDirectory(prefix="infer-", dir=settings.data_dir) as work:
            work_dir = Path(work)
            npz_path = storage.download_file(volume.storage_key, work_dir / "volume.npz")
            with np.load(npz_path, allow_pickle=False) as npz:
                shape_zyx = tuple(npz["image"].shape)
                categories = [int(value) for value in npz["categories"]]
            if job_id is not None:
                try:
                    client.get_status(job_id)
                except InferenceError as error:
                    if error.code != INFERENCE_REJECTED or error.http_status != 404:
                        raise
                    logger.warning("inference job %s is gone; submitting again", job_id)
                    job_id = None
            if job_id is None:
                # The attempt id as Idempotency-Key makes a repeated submit return one job.
                job_id = client.submit(npz_path, categories, idempotency_key=str(attempt.id))
                lease.update(inference_job_id=job_id)
            client.wait(job_id, on_progress=record_progress, before_poll=lease.verify)
            result = client.fetch_result(
                job_id, expected_shape_zyx=shape_zyx, categories=categories
            )
            breaker.record_success()
            result_path = work_dir / INFERENCE_RESULT_FILE_NAME
            np.savez(result_path, mask=result.mask, labels=np.asarray(result.labels, np.int32))
            key = study_object_key(
                attempt.clinic_id,
                attempt.study_id,
                INFERENCE_RESULT_FILE_NAME,
                attempt_id=attempt.id,
            )
            storage.publish_file(result_path, key, content_type="application/octet-stream")
    except LeaseLost:
        _cancel_job_if_cancelled(attempt.id, job_id, settings)
        raise
    except InferenceError as error:
        if error.code == INFERENCE_UNAVAILABLE:
            breaker.record_failure()
            _wait_for_provider(
                attempt, lease, settings, delay_s=settings.inference_breaker_cooldown_s
            )
            return
        # The provider responded, so it is up even though this study failed.
        breaker.record_success()
        code = getattr(error, "provider_code", None) or error.code
        if code not in _known_codes():
            code = error.code
        count_inference_error(code)
        _fail(lease, code)
        return
    lease.finish(StudyStatus.WRITING_RESULTS)
    write_results(attempt_id=str(attempt.id))


def build_inference_client(settings):
    from portal.inference.client import InferenceClient

    return InferenceClient(
        settings.inference_api_url,
        settings.inference_api_token,
        connect_timeout_s=settings.inference_api_connect_timeout_s,
        read_timeout_s=settings.inference_api_read_timeout_s,
        job_timeout_s=settings.inference_api_timeout_s,
        max_retries=settings.inference_api_retries,
    )


def _wait_for_provider(attempt: Attempt, lease: Lease, settings, *, delay_s: float) -> None:
    """Put the attempt back in the queue for the provider, or fail it after the maximum wait.

    Waiting for an unavailable provider uses up none of the attempt's recoveries.
    """
    from portal.inference.errors import INFERENCE_UNAVAILABLE

    waited_s = (utcnow() - (attempt.queued_at or attempt.created_at)).total_seconds()
    if waited_s + delay_s > settings.inference_max_wait_s:
        _fail(lease, INFERENCE_UNAVAILABLE)
        return
    db.session.rollback()
    lease.finish(
        StudyStatus.INFERENCE_QUEUED,
        queued_at=attempt.queued_at or utcnow(),
        progress=STATUS_PROGRESS[StudyStatus.INFERENCE_QUEUED],
    )
    delay_s = max(delay_s, 1.0)
    run_inference.schedule(kwargs={"attempt_id": str(attempt.id)}, delay=delay_s)
    logger.info("attempt %s waits %.0f s for the inference provider", attempt.id, delay_s)


def _cancel_job_if_cancelled(attempt_id: uuid.UUID, job_id: str | None, settings) -> None:
    db.session.rollback()
    attempt = db.session.get(Attempt, attempt_id, populate_existing=True)
    if attempt is None or attempt.status != StudyStatus.CANCELLED:
        return
    job_id = job_id or attempt.inference_job_id
    if job_id is not None:
        cancel_provider_job.call_local(attempt_id=str(attempt_id), job_id=job_id)


@huey.task()
def write_results(*, attempt_id: str) -> None:
    """Write the mask NIfTI on the image's grid and affine, with per-label statistics."""
    with _app().app_context():
        _run_step(attempt_id, WRITE_RESULTS, _write_results)


def _write_results(attempt: Attempt, lease: Lease) -> None:
    import nibabel as nib

    from portal.pipeline import write_mask_nifti, write_native_mask
    from portal.storage import study_object_key

    settings = current_app.config["PORTAL_SETTINGS"]
    storage = current_app.extensions["portal_storage"]
    image = attempt.study.artifact(ArtifactKind.IMAGE_NIFTI, attempt)
    result_key = study_object_key(
        attempt.clinic_id, attempt.study_id, INFERENCE_RESULT_FILE_NAME, attempt_id=attempt.id
    )
    with tempfile.TemporaryDirectory(prefix="results-", dir=settings.data_dir) as work:
        work_dir = Path(work)
        image_path = storage.download_file(image.storage_key, work_dir / "image.nii.gz")
        result_path = storage.download_file(result_key, work_dir / "result.npz")
        affine_ras = nib.load(image_path).affine
        with np.load(result_path, allow_pickle=False) as npz:
            mask_zyx = np.asarray(npz["mask"], dtype=np.uint8)
        mask_path = work_dir / ARTIFACT_FILE_NAMES[ArtifactKind.MASK_NIFTI]
        write_mask_nifti(mask_zyx, affine_ras, mask_path)
        lease.check()
        stored = [
            _store_artifact(
                attempt, ArtifactKind.MASK_NIFTI, mask_path, content_type="application/gzip"
            )
        ]
        # Native-resolution viewer: the mask resampled onto native.nii.gz.
        native = attempt.study.artifact(ArtifactKind.NATIVE_NIFTI, attempt)
        if native is not None:
            native_path = storage.download_file(
                native.storage_key, work_dir / ARTIFACT_FILE_NAMES[ArtifactKind.NATIVE_NIFTI]
            )
            native_mask_path = work_dir / ARTIFACT_FILE_NAMES[ArtifactKind.MASK_NATIVE_NIFTI]
            write_native_mask(mask_zyx, affine_ras, native_path, native_mask_path)
            lease.check()
            stored.append(
                _store_artifact(
                    attempt,
                    ArtifactKind.MASK_NATIVE_NIFTI,
                    native_mask_path,
                    content_type="application/gzip",
                )
            )
    db.session.add_all(stored)
    lease.finish(StudyStatus.SUCCEEDED, label_stats=label_statistics(mask_zyx, affine_ras))
    logger.info("attempt %s of study %s succeeded", attempt.id, attempt.study_id)


@huey.task()
def cancel_provider_job(*, attempt_id: str, job_id: str | None = None) -> None:
    """Cancel the inference job of a cancelled attempt; a finished job is left alone."""
    from portal.inference.client import InferenceError

    with _app().app_context():
        attempt = load_attempt(attempt_id)
        if attempt is None or attempt.status != StudyStatus.CANCELLED:
            return
        job_id = job_id or attempt.inference_job_id
        if job_id is None:
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        try:
            with build_inference_client(settings) as client:
                client.cancel(job_id)
        except InferenceError as error:
            logger.warning(
                "inference job %s of attempt %s not cancelled: %s", job_id, attempt_id, error.code
            )


@huey.task()
def deliver_webhooks(*, endpoint_id: str) -> None:
    """Send the due webhook deliveries of one endpoint in event order.

    The run that recorded a failed attempt schedules the retry. A run that sent nothing
    schedules nothing, so the tasks queued by new events do not pile up behind a retry.
    """
    from portal.webhooks.delivery import deliver_endpoint

    with _app().app_context():
        try:
            endpoint_uuid = uuid.UUID(endpoint_id)
        except ValueError:
            logger.error("webhook task with an invalid endpoint id dropped")
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        result = deliver_endpoint(endpoint_uuid, settings=settings)
        if result is None or result.next_due_at is None:
            return
        if result.sent > 0 or result.more_due:
            delay_s = max(0.0, (result.next_due_at - utcnow()).total_seconds())
            queue_webhook_deliveries([endpoint_uuid], delay_s=delay_s)


def queue_webhook_deliveries(endpoint_ids, *, delay_s: float = 0.0) -> None:
    """Queue a delivery run for each endpoint; a queue outage is left to the sweeper."""
    for endpoint_id in endpoint_ids:
        try:
            if delay_s > 0:
                deliver_webhooks.schedule(kwargs={"endpoint_id": str(endpoint_id)}, delay=delay_s)
            else:
                deliver_webhooks(endpoint_id=str(endpoint_id))
        except Exception:  # noqa: BLE001 - the rows are committed; the sweeper queues them
            logger.warning(
                "webhook endpoint %s not queued; the sweeper will queue it",
                endpoint_id,
                exc_info=True,
            )


@huey.task(retries=5, retry_delay=60)
def purge_study_objects(*, study_id: str) -> None:
    """Delete every stored object of a deleted study; retried when storage is down."""
    from portal.storage import study_prefix
    from portal.studies.models import Study

    with _app().app_context():
        set_clinic_of(Study, uuid.UUID(study_id))
        study = db.session.get(Study, uuid.UUID(study_id))
        if study is None or not study.is_deleted:
            return
        storage = current_app.extensions["portal_storage"]
        deleted = storage.delete_prefix(study_prefix(study.clinic_id, study.id))
        logger.info("deleted %d objects of study %s", deleted, study_id)


@huey.periodic_task(crontab(minute=str(AUDIT_ANCHOR_MINUTE)))
def anchor_audit_chains() -> None:
    """Copy each audit chain's head to object storage, once an hour."""
    from portal.audit.integrity import anchor_chain_heads

    with _app().app_context():
        anchor_chain_heads(current_app.extensions["portal_storage"])


@huey.periodic_task(crontab(minute="17"))
def apply_retention_periodically() -> None:
    """Delete raw data and expired results once an hour; see `portal.privacy.retention`."""
    from portal.privacy.retention import apply_retention

    with _app().app_context():
        settings = current_app.config["PORTAL_SETTINGS"]
        done = apply_retention(settings=settings, storage=current_app.extensions["portal_storage"])
        logger.info(
            "retention: raw data of %d studies and results of %d studies deleted",
            len(done["raw_data"]),
            len(done["results"]),
        )


def label_statistics(mask_zyx: np.ndarray, affine_ras: np.ndarray) -> list[dict]:
    """Count voxels per label and convert to millilitres with the affine's voxel volume."""
    voxel_volume_ml = abs(float(np.linalg.det(np.asarray(affine_ras)[:3, :3]))) / 1000.0
    values, counts = np.unique(mask_zyx, return_counts=True)
    return [
        {
            "value": int(value),
            "voxel_count": int(count),
            "volume_ml": round(int(count) * voxel_volume_ml, 2),
        }
        for value, count in zip(values, counts, strict=True)
        if value != 0
    ]


def _known_codes() -> set[str]:
    from portal.studies.error_catalogue import STUDY_ERROR_MESSAGES

    return set(STUDY_ERROR_MESSAGES)


def _safe_params(params: dict) -> dict:
    """Keep only numbers and short codes from an error's parameters for storage."""
    safe = {}
    for name, value in (params or {}).items():
        if isinstance(value, bool | int | float):
            safe[name] = value
        elif isinstance(value, str) and len(value) <= 64 and value.replace("_", "").isalnum():
            safe[name] = value
    return safe
