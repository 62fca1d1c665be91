"""State changes of studies: upload, queueing, cancel, run again, delete, results.

The caller commits, then queues the tasks a service asks for.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from portal import audit
from portal.audit import actions
from portal.categories import Category, categories_by_key, load_categories
from portal.clinics.models import ApiKey, Clinic, User
from portal.db_types import utcnow
from portal.errors import Conflict, NotFound, UploadTooLarge, UserFacingError, format_bytes
from portal.extensions import db
from portal.privacy.identifiers import SEALED_COLUMNS, seal_identifiers
from portal.storage import Storage, study_object_key
from portal.studies.models import (
    ARTIFACT_FILE_NAMES,
    WAITING_STATUSES,
    Artifact,
    ArtifactKind,
    Attempt,
    Study,
    StudyStatus,
    UploadIdempotencyKey,
)
from portal.tenancy import all_clinics, scoped

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024


class InvalidCategory(UserFacingError):
    code = "invalid_category"
    status = 400
    title = _l("Invalid category")
    message = _l("Unknown segmentation category: %(key)s. Use the keys listed by the API.")


class EmptyUpload(UserFacingError):
    code = "upload_empty"
    status = 400
    title = _l("Empty file")
    message = _l("The file has 0 bytes. Export the study again and upload the new ZIP.")


class StudyNotSucceeded(Conflict):
    code = "study_not_succeeded"
    title = _l("No result yet")
    message = _l(
        "The study has no successful result yet. Check its status and try again when it is done."
    )


class StudyBusy(Conflict):
    code = "study_busy"
    title = _l("Study still processing")
    message = _l("The study is still processing. Cancel it first or wait until it finishes.")


class StudyNotCancellable(Conflict):
    code = "study_not_cancellable"
    title = _l("Nothing to cancel")
    message = _l("The study has already finished, so there is nothing to cancel.")


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_conflict"
    title = _l("Idempotency key already used")
    message = _l(
        "This Idempotency-Key was already used for another upload (a different ZIP, "
        "categories or legal basis). Use a new key for a new upload."
    )
    deleted_message = _l(
        "This Idempotency-Key created a study that was deleted since. Use a new key to "
        "upload the study again."
    )


class StudyOnLegalHold(Conflict):
    code = "study_on_legal_hold"
    title = _l("Study on legal hold")
    message = _l(
        "This study is on legal hold, so it cannot be deleted. A clinic admin must lift the "
        "hold on the study page first."
    )


class StudyRawDataDeleted(Conflict):
    code = "study_raw_data_deleted"
    title = _l("Study can no longer run")
    message = _l(
        "The uploaded files of this study were deleted, at the end of their retention "
        "period or at the patient's request, so it cannot run again."
    )


class InvalidSeriesId(UserFacingError):
    code = "invalid_series_id"
    status = 400
    title = _l("Invalid series")
    message = _l("The series id must be text of at most 64 characters, as listed in the report.")


class UnknownSeriesId(UserFacingError):
    code = "unknown_series_id"
    status = 400
    title = _l("Unknown series")
    message = _l(
        "This study has no series with that id. Use a series_id listed in the study's report."
    )


def _reported_series_ids(study: Study) -> set[str] | None:
    """Return the series ids of the latest report of the study, or None without a report."""
    for attempt in sorted(study.attempts, key=lambda item: item.number, reverse=True):
        if attempt.report and attempt.report.get("series"):
            return {str(item.get("series_id")) for item in attempt.report["series"]}
    return None


@dataclass(frozen=True)
class Actor:
    """The signed-in user or clinic API key that requested a change."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


def get_study_or_404(study_id: uuid.UUID | str, *, clinic: Clinic) -> Study:
    """Load a study of `clinic`; a study of another clinic, or a deleted one, is not found."""
    try:
        study_uuid = study_id if isinstance(study_id, uuid.UUID) else uuid.UUID(str(study_id))
    except ValueError:
        raise NotFound() from None
    study = db.session.scalar(
        scoped(Study, clinic.id).where(Study.id == study_uuid, Study.deleted_at.is_(None))
    )
    if study is None:
        raise NotFound()
    return study


def list_studies(clinic: Clinic, *, limit: int = 100) -> list[Study]:
    return list(
        db.session.scalars(
            scoped(Study, clinic.id)
            .where(Study.deleted_at.is_(None))
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


@dataclass(frozen=True)
class UploadOutcome:
    """The study an upload created, or the earlier one its Idempotency-Key names."""

    study: Study
    #: True when the upload repeated an earlier one with the same Idempotency-Key.
    replayed: bool = False


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
    idempotency_key: str | None = None,
    legal_basis: str | None = None,
    file_name: str = "",
) -> UploadOutcome:
    """Store an uploaded ZIP and create the study with its first attempt.

    The object is stored before the row is committed, so a worker never sees a study
    whose upload is missing. The caller commits and then queues the attempt, unless the
    outcome is a replay. With an `idempotency_key` the clinic used before, the earlier
    study is returned when the ZIP, categories and legal basis are the same, and
    IdempotencyKeyConflict is raised when they differ. `legal_basis` empty means the
    default basis; `file_name` is stored encrypted, because clinics often name exports
    after the patient.
    """
    from portal.privacy.identifiers import check_legal_basis

    categories = resolve_categories(category_keys)
    legal_basis = check_legal_basis(legal_basis)
    work_dir.mkdir(parents=True, exist_ok=True)
    path, size_bytes, sha256 = spool_upload(stream, max_bytes=max_upload_bytes, directory=work_dir)
    try:
        fingerprint = upload_fingerprint(
            sha256, [category.key for category in categories], legal_basis=legal_basis
        )
        if idempotency_key is not None:
            earlier = study_for_idempotency_key(clinic, idempotency_key, fingerprint)
            if earlier is not None:
                return UploadOutcome(earlier, replayed=True)
        study = Study(
            id=uuid.uuid4(),
            clinic_id=clinic.id,
            uploaded_by_user_id=uploaded_by.id if uploaded_by else None,
            uploaded_by_api_key_id=api_key.id if api_key else None,
            requested_categories=[category.key for category in categories],
            upload_size_bytes=size_bytes,
            upload_sha256=sha256,
            legal_basis=legal_basis,
        )
        seal_identifiers(study, {"upload_file_name": (file_name or "")[:255]})
        if idempotency_key is None:
            db.session.add(study)
        else:
            earlier = claim_idempotency_key(clinic, idempotency_key, fingerprint, study)
            if earlier is not None:
                return UploadOutcome(earlier, replayed=True)
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
        study.attempts.append(
            Attempt(
                clinic_id=clinic.id,
                number=1,
                created_by_user_id=uploaded_by.id if uploaded_by else None,
                created_by_api_key_id=api_key.id if api_key else None,
            )
        )
        db.session.flush()
    finally:
        path.unlink(missing_ok=True)
    audit.record(
        actions.STUDY_UPLOADED,
        target_type="study",
        target_id=study.id,
        clinic_id=clinic.id,
        details={"size_bytes": size_bytes, "categories": study.requested_categories},
    )
    logger.info("study %s uploaded to clinic %s (%d bytes)", study.id, clinic.id, size_bytes)
    return UploadOutcome(study)


def upload_fingerprint(upload_sha256: str, category_keys: list[str], *, legal_basis: str) -> str:
    """Hash what makes two uploads the same: the ZIP's SHA-256, categories and legal basis."""
    text = upload_sha256 + "\n" + ",".join(sorted(category_keys)) + "\n" + legal_basis
    return hashlib.sha256(text.encode()).hexdigest()


def study_for_idempotency_key(clinic: Clinic, key: str, fingerprint: str) -> Study | None:
    """Return the study an earlier upload with `key` created, or None for a new key.

    Raises IdempotencyKeyConflict when the earlier upload differs or its study was deleted.
    """
    record = db.session.scalar(
        scoped(UploadIdempotencyKey, clinic.id).where(UploadIdempotencyKey.key == key)
    )
    if record is None:
        return None
    if record.request_fingerprint != fingerprint:
        raise IdempotencyKeyConflict()
    if record.study.deleted_at is not None:
        raise IdempotencyKeyConflict(message=IdempotencyKeyConflict.deleted_message)
    logger.info("upload with a known idempotency key returns study %s", record.study_id)
    return record.study


def claim_idempotency_key(clinic: Clinic, key: str, fingerprint: str, study: Study) -> Study | None:
    """Add `study` and record that `key` created it; return the earlier study on a race.

    Both rows are inserted in one savepoint. When a concurrent upload with the same key
    commits first, the unique constraint fails here, the savepoint's rollback takes the
    new study out of the session, and that upload's study is returned instead.
    """
    try:
        with db.session.begin_nested():
            db.session.add(study)
            db.session.add(
                UploadIdempotencyKey(
                    clinic_id=clinic.id, key=key, request_fingerprint=fingerprint, study=study
                )
            )
    except IntegrityError:
        logger.info("idempotency key of clinic %s was claimed by a concurrent upload", clinic.id)
        return study_for_idempotency_key(clinic, key, fingerprint)
    return None


def queue_attempt(attempt: Attempt) -> None:
    """Queue the first step of `attempt`; call only after the row is committed."""
    from portal import tasks

    tasks.convert_attempt(attempt_id=str(attempt.id))
    logger.info("attempt %s of study %s queued", attempt.id, attempt.study_id)


def cancel_study(study: Study, *, actor: Actor) -> Attempt:
    """Cancel the study's running attempt; the caller commits, then calls `after_cancel`.

    The worker holding the attempt notices at its next lease renewal or poll and stops.
    """
    attempt = _cancel_latest_attempt(study, actor=actor)
    audit.record(
        actions.STUDY_CANCELLED,
        target_type="study",
        target_id=study.id,
        clinic_id=study.clinic_id,
        details={"attempt": attempt.number},
    )
    return attempt


def _cancel_latest_attempt(study: Study, *, actor: Actor) -> Attempt:
    attempt = study.latest_attempt
    if attempt is None or attempt.status.is_terminal:
        raise StudyNotCancellable()
    attempt.cancel(user_id=actor.user_id, api_key_id=actor.api_key_id)
    db.session.flush()
    logger.info("attempt %s of study %s cancelled", attempt.id, study.id)
    return attempt


def after_cancel(attempt: Attempt) -> None:
    """Queue the cancellation of the provider's job; call after the commit."""
    from portal import tasks

    tasks.cancel_provider_job(attempt_id=str(attempt.id))


def rerun_study(study: Study, *, actor: Actor, series_id: str | None = None) -> Attempt:
    """Add a new attempt to a finished study, optionally for another series.

    Earlier attempts and their results stay. The caller commits, then queues the attempt.
    """
    if series_id is not None and (
        not isinstance(series_id, str) or not series_id.strip() or len(series_id) > 64
    ):
        raise InvalidSeriesId()
    latest = study.latest_attempt
    if latest is not None and not latest.status.is_terminal:
        raise StudyBusy()
    if study.raw_data_deleted_at is not None:
        raise StudyRawDataDeleted()
    if series_id is not None:
        known = _reported_series_ids(study)
        # Before any conversion there is no report, and conversion checks the id itself.
        if known is not None and series_id.strip() not in known:
            raise UnknownSeriesId()
    number = (
        db.session.scalar(select(func.max(Attempt.number)).where(Attempt.study_id == study.id)) or 0
    ) + 1
    attempt = Attempt(
        clinic_id=study.clinic_id,
        number=number,
        requested_series_id=series_id.strip() if series_id else None,
        created_by_user_id=actor.user_id,
        created_by_api_key_id=actor.api_key_id,
    )
    study.attempts.append(attempt)
    db.session.flush()
    audit.record(
        actions.STUDY_RERUN,
        target_type="study",
        target_id=study.id,
        clinic_id=study.clinic_id,
        details={"attempt": number, "series_picked": attempt.requested_series_id is not None},
    )
    logger.info("study %s runs again as attempt %d", study.id, number)
    return attempt


def delete_study(study: Study, *, actor: Actor) -> Attempt | None:
    """Mark the study deleted, recording who did it, and cancel a running attempt.

    The row stays as the record, without the patient identifiers. The caller commits, then
    calls `after_delete`, which queues the deletion of the stored objects. Returns the
    attempt it cancelled, if any. A study on legal hold raises StudyOnLegalHold.
    """
    if study.is_on_legal_hold:
        raise StudyOnLegalHold()
    cancelled = None
    attempt = study.latest_attempt
    if attempt is not None and not attempt.status.is_terminal:
        cancelled = _cancel_latest_attempt(study, actor=actor)
    study.deleted_at = utcnow()
    study.deleted_by_user_id = actor.user_id
    study.deleted_by_api_key_id = actor.api_key_id
    # The row stays as the record of the deletion; the patient identifiers go with the data.
    seal_identifiers(study, dict.fromkeys(SEALED_COLUMNS, ""))
    db.session.flush()
    audit.record(
        actions.STUDY_DELETED,
        target_type="study",
        target_id=study.id,
        clinic_id=study.clinic_id,
        details={"cancelled_attempt": cancelled.number if cancelled is not None else None},
    )
    logger.info("study %s deleted", study.id)
    return cancelled


def after_delete(study: Study, cancelled: Attempt | None) -> None:
    """Queue the provider job's cancellation and the objects' deletion; call after commit."""
    from portal import tasks

    if cancelled is not None:
        after_cancel(cancelled)
    tasks.purge_study_objects(study_id=str(study.id))


@dataclass(frozen=True)
class ProgressEstimate:
    """An attempt's position among the waiting attempts and its estimated time left.

    Both are estimates from the clinic's recent studies, not promises.
    """

    queue_position: int | None
    remaining_s: float | None


#: How many recent successful attempts of the clinic the time estimate uses.
ESTIMATE_SAMPLE_SIZE = 20


def progress_estimate(attempt: Attempt) -> ProgressEstimate:
    """Estimate the queue position and the time left of a running attempt."""
    if attempt.status.is_terminal:
        return ProgressEstimate(None, None)
    position = None
    if attempt.status in WAITING_STATUSES:
        # The queue is shared by every clinic, so the count crosses clinics; only the
        # number leaves this query.
        with all_clinics():
            ahead = db.session.scalar(
                select(func.count())
                .select_from(Attempt)
                .where(
                    Attempt.status == attempt.status,
                    Attempt.queued_at < attempt.queued_at,
                )
            )
        position = int(ahead or 0) + 1
    durations = [
        (finished - created).total_seconds()
        for created, finished in db.session.execute(
            select(Attempt.created_at, Attempt.finished_at)
            .where(
                Attempt.clinic_id == attempt.clinic_id,
                Attempt.status == StudyStatus.SUCCEEDED,
                Attempt.finished_at.is_not(None),
            )
            .order_by(Attempt.finished_at.desc())
            .limit(ESTIMATE_SAMPLE_SIZE)
        )
    ]
    if not durations:
        return ProgressEstimate(position, None)
    typical_s = statistics.median(durations)
    elapsed_s = (utcnow() - attempt.created_at).total_seconds()
    remaining_s = max(typical_s * (1 - attempt.progress / 100), typical_s - elapsed_s, 0.0)
    return ProgressEstimate(position, remaining_s)


def processing_delayed(settings) -> bool:
    """Tell whether studies are held up: the provider is down or the queue is stuck."""
    from portal.breaker import inference_breaker

    if inference_breaker(settings).is_open():
        return True
    # A stuck queue delays every clinic, so the oldest waiting time crosses clinics.
    with all_clinics():
        oldest_waiting = db.session.scalar(
            select(func.min(Attempt.queued_at)).where(Attempt.status.in_(WAITING_STATUSES))
        )
    if oldest_waiting is None:
        return False
    if oldest_waiting.tzinfo is None:
        oldest_waiting = oldest_waiting.replace(tzinfo=utcnow().tzinfo)
    return utcnow() - oldest_waiting > timedelta(seconds=settings.queue_delay_warning_s)


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

    Records a `result.urls_issued` event in the caller's transaction; the caller commits.

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
    # The event names the artifacts, never the URLs: a presigned URL grants access.
    audit.record(
        actions.RESULT_URLS_ISSUED,
        target_type="study",
        target_id=study.id,
        clinic_id=study.clinic_id,
        details={
            "artifacts": [str(image.kind), str(mask.kind)],
            "attempt": attempt.number,
            "grid": grid,
        },
    )
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
