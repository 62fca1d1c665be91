"""Huey tasks that move an attempt through its steps. Each takes ids only and can run twice.

A step claims its attempt with a compare-and-set on the status, so a second delivery of
the same task finds the row already past it and returns.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
from flask import Flask, current_app, has_app_context
from sqlalchemy import update

from portal.db_types import utcnow
from portal.extensions import db
from portal.queue import huey
from portal.studies.models import (
    ARTIFACT_FILE_NAMES,
    Artifact,
    ArtifactKind,
    Attempt,
    StudyStatus,
)

logger = logging.getLogger(__name__)

INFERENCE_RESULT_FILE_NAME = "inference_result.npz"
LEASE_OWNER = f"{os.uname().nodename}:{os.getpid()}"

_task_app: Flask | None = None


def set_task_app(app: Flask) -> None:
    """Make tasks run in `app`; the worker command calls it once with the app it built."""
    global _task_app
    _task_app = app


def _app() -> Flask:
    global _task_app
    if has_app_context():
        return current_app._get_current_object()
    if _task_app is None:
        from portal.app import create_app

        _task_app = create_app()
    return _task_app


def claim(attempt_id: uuid.UUID, expected: StudyStatus, target: StudyStatus) -> Attempt | None:
    """Move the attempt from `expected` to `target` atomically; None when another got there."""
    result = db.session.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.status == expected)
        .values(status=target, lease_owner=LEASE_OWNER, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:
        logger.info("attempt %s is not %s; step %s skipped", attempt_id, expected, target)
        return None
    attempt = db.session.get(Attempt, attempt_id, populate_existing=True)
    # The compare-and-set moved the status; the rest of the move (progress, times) follows.
    attempt.status = expected
    attempt.move_to(target)
    db.session.commit()
    return attempt


def _fail(attempt: Attempt, code: str, detail: dict | None = None) -> None:
    db.session.rollback()
    attempt = db.session.get(Attempt, attempt.id, populate_existing=True)
    if attempt.status.is_terminal:
        return
    attempt.fail(code, detail)
    db.session.commit()
    logger.warning("attempt %s of study %s failed: %s", attempt.id, attempt.study_id, code)


def _store_artifact(
    attempt: Attempt, kind: ArtifactKind | None, path: Path, *, file_name: str, content_type: str
) -> str:
    from portal.storage import study_object_key

    storage = current_app.extensions["portal_storage"]
    key = study_object_key(attempt.clinic_id, attempt.study_id, file_name, attempt_id=attempt.id)
    size_bytes = storage.upload_file(path, key, content_type=content_type)
    if kind is not None:
        db.session.add(
            Artifact(
                study_id=attempt.study_id,
                attempt_id=attempt.id,
                clinic_id=attempt.clinic_id,
                kind=kind,
                storage_key=key,
                size_bytes=size_bytes,
                content_type=content_type,
            )
        )
    return key


@huey.task()
def convert_attempt(*, attempt_id: str) -> None:
    """Convert the study's ZIP into the inference NPZ, the image NIfTI and the report."""
    from portal.pipeline import PipelineError, convert_study

    with _app().app_context():
        attempt = claim(uuid.UUID(attempt_id), StudyStatus.UPLOADED, StudyStatus.CONVERTING)
        if attempt is None:
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        storage = current_app.extensions["portal_storage"]
        study = attempt.study
        upload = study.artifact(ArtifactKind.UPLOAD)
        from portal.categories import categories_by_key

        catalogue = categories_by_key()
        category_values = [
            catalogue[key].value for key in study.requested_categories if key in catalogue
        ]
        try:
            with tempfile.TemporaryDirectory(prefix="convert-", dir=settings.data_dir) as work:
                work_dir = Path(work)
                zip_path = storage.download_file(upload.storage_key, work_dir / "upload.zip")
                result = convert_study(
                    zip_path,
                    work_dir / "out",
                    target_hw=settings.dicom_target_hw,
                    target_slices=settings.dicom_target_slices,
                    window_center=settings.dicom_window_center,
                    window_width=settings.dicom_window_width,
                    series_id=attempt.requested_series_id,
                    categories=category_values,
                    # Native-resolution viewer: past this size only the model grid is stored.
                    native_max_bytes=settings.viewer_native_max_bytes,
                )
                outputs = [
                    (ArtifactKind.VOLUME_NPZ, result.npz_path, "application/octet-stream"),
                    (ArtifactKind.IMAGE_NIFTI, result.image_path, "application/gzip"),
                    (ArtifactKind.REPORT_JSON, result.report_path, "application/json"),
                ]
                # Native-resolution viewer: store native.nii.gz when the pipeline wrote it.
                if result.native_path is not None:
                    outputs.append(
                        (ArtifactKind.NATIVE_NIFTI, result.native_path, "application/gzip")
                    )
                for kind, path, content_type in outputs:
                    _store_artifact(
                        attempt,
                        kind,
                        Path(path),
                        file_name=ARTIFACT_FILE_NAMES[kind],
                        content_type=content_type,
                    )
        except PipelineError as error:
            _fail(attempt, error.code, _safe_params(getattr(error, "params", {})))
            return
        except Exception:
            logger.exception("conversion of attempt %s failed unexpectedly", attempt.id)
            _fail(attempt, "internal_error")
            return
        study.modality = result.modality
        study.series_description = (result.series_description or "")[:200]
        study.slice_count = result.slice_count
        attempt.chosen_series_id = result.series_id
        attempt.report = result.report
        attempt.move_to(StudyStatus.INFERENCE_QUEUED)
        db.session.commit()
        logger.info("attempt %s converted (series %s)", attempt.id, result.series_id)
        run_inference(attempt_id=attempt_id)


@huey.task()
def run_inference(*, attempt_id: str) -> None:
    """Submit the NPZ to the inference API, follow the job and keep its result NPZ."""
    from portal.inference.client import InferenceClient, InferenceError

    with _app().app_context():
        attempt = claim(
            uuid.UUID(attempt_id), StudyStatus.INFERENCE_QUEUED, StudyStatus.INFERENCE_RUNNING
        )
        if attempt is None:
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        storage = current_app.extensions["portal_storage"]
        volume = attempt.study.artifact(ArtifactKind.VOLUME_NPZ, attempt)
        client = InferenceClient(
            settings.inference_api_url,
            settings.inference_api_token,
            job_timeout_s=settings.inference_api_timeout_s,
        )

        def record_progress(status) -> None:
            progress = 40 + int(round(0.5 * max(0, min(100, status.progress or 0))))
            if progress != attempt.progress:
                attempt.progress = progress
                db.session.commit()

        try:
            with tempfile.TemporaryDirectory(prefix="infer-", dir=settings.data_dir) as work:
                work_dir = Path(work)
                npz_path = storage.download_file(volume.storage_key, work_dir / "volume.npz")
                with np.load(npz_path, allow_pickle=False) as npz:
                    shape_zyx = tuple(npz["image"].shape)
                    categories = [int(value) for value in npz["categories"]]
                job_id = client.submit(npz_path, categories, idempotency_key=str(attempt.id))
                attempt.inference_job_id = job_id
                db.session.commit()
                client.wait(job_id, on_progress=record_progress)
                result = client.fetch_result(job_id, expected_shape_zyx=shape_zyx)
                result_path = work_dir / INFERENCE_RESULT_FILE_NAME
                np.savez(result_path, mask=result.mask, labels=np.asarray(result.labels, np.int32))
                _store_artifact(
                    attempt,
                    None,
                    result_path,
                    file_name=INFERENCE_RESULT_FILE_NAME,
                    content_type="application/octet-stream",
                )
        except InferenceError as error:
            code = getattr(error, "provider_code", None) or error.code
            if code not in _known_codes():
                code = error.code
            _fail(attempt, code)
            return
        except Exception:
            logger.exception("inference of attempt %s failed unexpectedly", attempt.id)
            _fail(attempt, "internal_error")
            return
        attempt.move_to(StudyStatus.WRITING_RESULTS)
        db.session.commit()
        write_results(attempt_id=attempt_id)


@huey.task()
def write_results(*, attempt_id: str) -> None:
    """Write the mask NIfTI on the image's grid and affine, with per-label statistics."""
    import nibabel as nib

    from portal.pipeline import write_mask_nifti, write_native_mask
    from portal.storage import study_object_key

    with _app().app_context():
        attempt = db.session.get(Attempt, uuid.UUID(attempt_id))
        if attempt is None or attempt.status != StudyStatus.WRITING_RESULTS:
            logger.info("attempt %s is not writing results; step skipped", attempt_id)
            return
        settings = current_app.config["PORTAL_SETTINGS"]
        storage = current_app.extensions["portal_storage"]
        image = attempt.study.artifact(ArtifactKind.IMAGE_NIFTI, attempt)
        result_key = study_object_key(
            attempt.clinic_id, attempt.study_id, INFERENCE_RESULT_FILE_NAME, attempt_id=attempt.id
        )
        try:
            with tempfile.TemporaryDirectory(prefix="results-", dir=settings.data_dir) as work:
                work_dir = Path(work)
                image_path = storage.download_file(image.storage_key, work_dir / "image.nii.gz")
                result_path = storage.download_file(result_key, work_dir / "result.npz")
                affine_ras = nib.load(image_path).affine
                with np.load(result_path, allow_pickle=False) as npz:
                    mask_zyx = np.asarray(npz["mask"], dtype=np.uint8)
                mask_path = work_dir / ARTIFACT_FILE_NAMES[ArtifactKind.MASK_NIFTI]
                write_mask_nifti(mask_zyx, affine_ras, mask_path)
                if attempt.study.artifact(ArtifactKind.MASK_NIFTI, attempt) is None:
                    _store_artifact(
                        attempt,
                        ArtifactKind.MASK_NIFTI,
                        mask_path,
                        file_name=mask_path.name,
                        content_type="application/gzip",
                    )
                # Native-resolution viewer: the mask resampled onto native.nii.gz.
                native = attempt.study.artifact(ArtifactKind.NATIVE_NIFTI, attempt)
                native_mask_kind = ArtifactKind.MASK_NATIVE_NIFTI
                if native is not None and attempt.study.artifact(native_mask_kind, attempt) is None:
                    native_path = storage.download_file(
                        native.storage_key,
                        work_dir / ARTIFACT_FILE_NAMES[ArtifactKind.NATIVE_NIFTI],
                    )
                    native_mask_path = work_dir / ARTIFACT_FILE_NAMES[native_mask_kind]
                    write_native_mask(mask_zyx, affine_ras, native_path, native_mask_path)
                    _store_artifact(
                        attempt,
                        native_mask_kind,
                        native_mask_path,
                        file_name=native_mask_path.name,
                        content_type="application/gzip",
                    )
                attempt.label_stats = label_statistics(mask_zyx, affine_ras)
        except Exception:
            logger.exception("writing results of attempt %s failed", attempt.id)
            _fail(attempt, "internal_error")
            return
        attempt.move_to(StudyStatus.SUCCEEDED)
        db.session.commit()
        logger.info("attempt %s of study %s succeeded", attempt.id, attempt.study_id)


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
