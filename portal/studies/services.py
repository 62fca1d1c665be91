"""State changes of studies: upload, queueing, results. The caller commits."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from portal.categories import Category, categories_by_key, load_categories
from portal.clinics.models import ApiKey, Clinic, User
from portal.errors import Conflict, NotFound, UploadTooLarge, UserFacingError, format_bytes
from portal.extensions import db
from portal.storage import Storage, study_object_key
from portal.studies.models import (
    ARTIFACT_FILE_NAMES,
    Artifact,
    ArtifactKind,
    Attempt,
    Study,
)

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024


class InvalidCategory(UserFacingError):
    code = "invalid_category"
    status = 400
    title = _l("Invalid category")
    message = _l("Unknown segmentation category: %(key)s. Use the keys listed by the API.")


class EmptyUpload(UserFacingError):
    code = "upload_missing"
    status = 400
    title = _l("File missing")
    message = _l("Choose the study's ZIP file to upload.")


class StudyNotSucceeded(Conflict):
    code = "study_not_succeeded"
    title = _l("No result yet")
    message = _l(
        "The study has no successful result yet. Check its status and try again when it is done."
    )


def get_study_or_404(study_id: uuid.UUID | str, *, clinic: Clinic) -> Study:
    """Load a study of `clinic`; a study of another clinic is indistinguishable from none."""
    try:
        study_uuid = study_id if isinstance(study_id, uuid.UUID) else uuid.UUID(str(study_id))
    except ValueError:
        raise NotFound() from None
    study = db.session.scalar(
        select(Study).where(Study.id == study_uuid, Study.clinic_id == clinic.id)
    )
    if study is None:
        raise NotFound()
    return study


def list_studies(clinic: Clinic, *, limit: int = 100) -> list[Study]:
    return list(
        db.session.scalars(
            select(Study)
            .where(Study.clinic_id == clinic.id)
            .order_by(Study.created_at.desc())
            .limit(limit)
        )
    )


def resolve_categories(keys: list[str]) -> list[Category]:
    """Map category keys to catalogue entries; no keys means every category."""
    catalogue = categories_by_key()
    if not keys:
        return list(load_categories())
    chosen = []
    for key in keys:
        if key not in catalogue:
            raise InvalidCategory(key=key)
        if catalogue[key] not in chosen:
            chosen.append(catalogue[key])
    return sorted(chosen, key=lambda category: category.value)


def spool_upload(stream: BinaryIO, *, max_bytes: int, directory: Path) -> tuple[Path, int, str]:
    """Copy an upload stream to a file in chunks; return its path, size and SHA-256.

    Raises UploadTooLarge as soon as the stream passes `max_bytes`, so a client that
    sends no Content-Length cannot fill the disk.
    """
    digest = hashlib.sha256()
    size_bytes = 0
    handle = tempfile.NamedTemporaryFile(dir=directory, suffix=".zip", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            while chunk := stream.read(COPY_CHUNK_BYTES):
                size_bytes += len(chunk)
                if size_bytes > max_bytes:
                    raise UploadTooLarge(limit=format_bytes(max_bytes))
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size_bytes == 0:
        path.unlink(missing_ok=True)
        raise EmptyUpload()
    return path, size_bytes, digest.hexdigest()


def create_study(
    *,
    clinic: Clinic,
    stream: BinaryIO,
    category_keys: list[str],
    storage: Storage,
    max_upload_bytes: int,
    work_dir: Path,
    uploaded_by: User | None = None,
    api_key: ApiKey | None = None,
) -> Study:
    """Store an uploaded ZIP and create the study with its first attempt.

    The object is stored before the row is committed, so a worker never sees a study
    whose upload is missing. The caller commits and then queues the attempt.
    """
    categories = resolve_categories(category_keys)
    work_dir.mkdir(parents=True, exist_ok=True)
    path, size_bytes, sha256 = spool_upload(stream, max_bytes=max_upload_bytes, directory=work_dir)
    try:
        study = Study(
            id=uuid.uuid4(),
            clinic_id=clinic.id,
            uploaded_by_user_id=uploaded_by.id if uploaded_by else None,
            uploaded_by_api_key_id=api_key.id if api_key else None,
            requested_categories=[category.key for category in categories],
            upload_size_bytes=size_bytes,
            upload_sha256=sha256,
        )
        db.session.add(study)
        key = study_object_key(clinic.id, study.id, ARTIFACT_FILE_NAMES[ArtifactKind.UPLOAD])
        storage.upload_file(path, key, content_type="application/zip")
        study.artifacts.append(
            Artifact(
                clinic_id=clinic.id,
                kind=ArtifactKind.UPLOAD,
                storage_key=key,
                size_bytes=size_bytes,
                content_type="application/zip",
            )
        )
        study.attempts.append(Attempt(clinic_id=clinic.id, number=1))
        db.session.flush()
    finally:
        path.unlink(missing_ok=True)
    logger.info("study %s uploaded to clinic %s (%d bytes)", study.id, clinic.id, size_bytes)
    return study


def queue_attempt(attempt: Attempt) -> None:
    """Queue the first step of `attempt`; call only after the row is committed."""
    from portal import tasks

    tasks.convert_attempt(attempt_id=str(attempt.id))
    logger.info("attempt %s of study %s queued", attempt.id, attempt.study_id)


def status_progress(study: Study) -> int:
    attempt = study.latest_attempt
    return attempt.progress if attempt else 0


@dataclass(frozen=True)
class ResultLinks:
    image_url: str
    mask_url: str
    expires_at: datetime
    labels: list[dict]
    #: "native" (the series' own resolution) or "model" (the inference grid).
    grid: str = "model"


def result_links(
    study: Study, *, storage: Storage, locale: str, prefer_native: bool = False
) -> ResultLinks:
    """Presign the latest successful attempt's image and mask for the browser.

    With `prefer_native`, the native pair (the series at its own resolution and the mask on
    it) is used when the attempt has both. Otherwise, and by default, the model-grid pair.
    """
    attempt = study.latest_successful_attempt
    if attempt is None:
        raise StudyNotSucceeded()
    image = mask = None
    grid = "native"
    if prefer_native:
        image = study.artifact(ArtifactKind.NATIVE_NIFTI, attempt)
        mask = study.artifact(ArtifactKind.MASK_NATIVE_NIFTI, attempt)
    if image is None or mask is None:
        image = study.artifact(ArtifactKind.IMAGE_NIFTI, attempt)
        mask = study.artifact(ArtifactKind.MASK_NIFTI, attempt)
        grid = "model"
    if image is None or mask is None:
        raise StudyNotSucceeded()
    image_url, expires_at = storage.presigned_get_url(image.storage_key)
    mask_url, _mask_expiry = storage.presigned_get_url(mask.storage_key)
    logger.info(
        "presigned %s image and mask of study %s attempt %s", grid, study.id, attempt.number
    )
    return ResultLinks(
        image_url=image_url,
        mask_url=mask_url,
        expires_at=expires_at,
        grid=grid,
        labels=result_labels(attempt, locale=locale),
    )


def result_labels(attempt: Attempt, *, locale: str) -> list[dict]:
    """Describe each label present in the attempt's mask, in the catalogue's order."""
    from portal.categories import categories_by_value

    catalogue = categories_by_value()
    present = {item["value"]: item for item in attempt.label_stats or []}
    labels = []
    for value in sorted(present):
        category = catalogue.get(value)
        if category is None:
            continue
        labels.append(
            {
                "value": value,
                "key": category.key,
                "name": category.name(locale),
                "color": category.color,
                "voxel_count": present[value].get("voxel_count", 0),
                "volume_ml": present[value].get("volume_ml", 0.0),
            }
        )
    return labels
