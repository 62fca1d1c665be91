"""Data subject requests of one patient, made by a clinic admin: export and erasure.

The patient is found by patient ID through the keyed hash (`identifiers.studies_of_patient`).
Both requests are audited; the erasure leaves a tombstone event that names study ids
and counts only.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from portal.audit import actions
from portal.clinics.models import Clinic
from portal.db_types import utcnow
from portal.extensions import db
from portal.privacy.identifiers import open_identifiers, seal_identifiers, studies_of_patient
from portal.privacy.legal_basis import LEGAL_BASES
from portal.privacy.retention import raw_object_keys, remove_study_data, results_expire_at
from portal.storage import Storage, study_prefix
from portal.studies.models import ArtifactKind, Attempt, Study, StudyStatus
from portal.studies.services import Actor, cancel_study

logger = logging.getLogger(__name__)

#: Objects that make up the medical record and stay until the retention period ends.
RECORD_ARTIFACT_KINDS = frozenset(
    {ArtifactKind.IMAGE_NIFTI, ArtifactKind.MASK_NIFTI, ArtifactKind.REPORT_JSON}
)
#: Identifiers erased at once; the patient ID stays while the record is kept, so the record
#: remains attributable to its patient.
ERASED_FIELDS = ("patient_name", "birth_date", "accession_number", "upload_file_name")
#: Event actions, in the audit trail's `area.verb` form.
EXPORT_ACTION = actions.PATIENT_DATA_EXPORTED
ERASURE_ACTION = actions.PATIENT_DATA_ERASED


@dataclass
class ErasureSummary:
    """The outcome of an erasure, for the admin: study ids and dates, no identifier."""

    #: Studies with nothing kept: every object deleted and the study removed.
    erased_study_ids: list[uuid.UUID] = field(default_factory=list)
    #: Studies whose results stay in the medical record, with the end of their retention.
    retained: list[tuple[uuid.UUID, datetime | None]] = field(default_factory=list)
    #: Studies on legal hold, left untouched.
    held_study_ids: list[uuid.UUID] = field(default_factory=list)
    deleted_object_count: int = 0
    #: Attempts that were running and got cancelled; the caller cancels their provider jobs.
    cancelled_attempts: list[Attempt] = field(default_factory=list)

    @property
    def study_count(self) -> int:
        return len(self.erased_study_ids) + len(self.retained) + len(self.held_study_ids)


def study_record(study: Study) -> dict:
    """Return the study's record as exported to the patient, identifiers included."""
    basis = LEGAL_BASES.get(study.legal_basis)
    return {
        "id": str(study.id),
        "created_at": study.created_at.isoformat(),
        "patient": open_identifiers(study).to_json(),
        "legal_basis": {
            "code": study.legal_basis,
            "article": basis.article if basis else None,
            "purpose": str(basis.purpose) if basis else None,
        },
        "modality": study.modality,
        "series_description": study.series_description,
        "slice_count": study.slice_count,
        "categories": list(study.requested_categories or []),
        "raw_data_deleted_at": _iso(study.raw_data_deleted_at),
        "erasure_requested_at": _iso(study.erasure_requested_at),
        "deleted_at": _iso(study.deleted_at),
        "attempts": [
            {
                "number": attempt.number,
                "status": str(attempt.status),
                "created_at": attempt.created_at.isoformat(),
                "finished_at": _iso(attempt.finished_at),
                "series_id": attempt.chosen_series_id,
                "error_code": attempt.error_code,
                "label_stats": attempt.label_stats,
            }
            for attempt in study.attempts
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export_patient_data(
    clinic: Clinic, patient_id: str, *, storage: Storage, work_dir: Path
) -> tuple[Path, int]:
    """Write a ZIP of the patient's studies and return its path and the study count.

    The ZIP contains per study `study.json` (the record), and per attempt `report.json`
    (the ingestion report), `label_stats.json` and the result NIfTI pair when stored,
    plus `audit_events.json` with the clinic's events whose target is one of those studies.
    Member names hold study ids and attempt numbers only. The caller sends the file,
    deletes it, and commits the audit event recorded here.
    """
    studies = studies_of_patient(clinic, patient_id, include_deleted=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        prefix="export-", suffix=".zip", dir=work_dir, delete=False
    )
    handle.close()
    path = Path(handle.name)
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for study in studies:
                _export_study(archive, study, storage=storage)
            events = study_audit_events(clinic, [study.id for study in studies])
            archive.writestr("audit_events.json", _json(events))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record_privacy_event(
        EXPORT_ACTION,
        clinic_id=clinic.id,
        details={"study_ids": [str(study.id) for study in studies], "study_count": len(studies)},
    )
    logger.info("patient data export of %d studies in clinic %s", len(studies), clinic.id)
    return path, len(studies)


def study_audit_events(clinic: Clinic, study_ids: list[uuid.UUID]) -> list[dict]:
    """Return the clinic's audit events about the given studies, oldest first."""
    from portal.audit.models import AuditEvent
    from portal.tenancy import scoped

    if not study_ids:
        return []
    events = db.session.scalars(
        scoped(AuditEvent, clinic.id)
        .where(
            AuditEvent.target_type == "study",
            AuditEvent.target_id.in_([str(study_id) for study_id in study_ids]),
        )
        .order_by(AuditEvent.seq)
    )
    return [
        {
            "occurred_at": event.occurred_at.isoformat(),
            "action": event.action,
            "actor_type": str(event.actor_type),
            "actor_id": event.actor_id,
            "actor_role": event.actor_role,
            "target_id": event.target_id,
            "outcome": str(event.outcome),
            "details": event.details,
        }
        for event in events
    ]


def _export_study(archive: zipfile.ZipFile, study: Study, *, storage: Storage) -> None:
    folder = f"studies/{study.id}"
    archive.writestr(f"{folder}/study.json", _json(study_record(study)))
    attempt_numbers = {attempt.id: attempt.number for attempt in study.attempts}
    for attempt in study.attempts:
        attempt_folder = f"{folder}/attempts/{attempt.number}"
        if attempt.report:
            archive.writestr(f"{attempt_folder}/report.json", _json(attempt.report))
        if attempt.label_stats is not None:
            archive.writestr(f"{attempt_folder}/label_stats.json", _json(attempt.label_stats))
    with tempfile.TemporaryDirectory(prefix="export-", dir=archive_dir(archive)) as work:
        for artifact in study.artifacts:
            if artifact.kind not in (ArtifactKind.IMAGE_NIFTI, ArtifactKind.MASK_NIFTI):
                continue
            number = attempt_numbers.get(artifact.attempt_id)
            name = artifact.storage_key.rsplit("/", 1)[-1]
            local = storage.download_file(artifact.storage_key, Path(work) / name)
            archive.write(local, f"{folder}/attempts/{number}/{name}")
            local.unlink()


def archive_dir(archive: zipfile.ZipFile) -> Path:
    """Return the folder of the ZIP being written, so downloads stay on the same volume."""
    return Path(archive.filename).parent


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n"


def erase_patient_data(
    clinic: Clinic, patient_id: str, *, storage: Storage, actor: Actor
) -> ErasureSummary:
    """Delete at once what no legal duty keeps of the patient's studies; the caller commits.

    A study with a successful attempt keeps its medical record (the model-grid NIfTI pair,
    the reports and the patient ID) until its retention ends (LGPD art. 16 I), marked with
    `erasure_requested_at`; its raw upload, inference inputs, native-resolution volumes and
    the other identifiers go now. A study without a result keeps nothing and is removed.
    Studies on legal hold are left as they are. A running attempt is cancelled first, on
    behalf of `actor`; the caller commits, then cancels `summary.cancelled_attempts` at the
    provider (`studies.services.after_cancel`).

    NOTE: a step that was storing an object when the cancel landed may still finish that
    upload after the erasure. The object then stays until the study's retention ends.
    """
    summary = ErasureSummary()
    for study in studies_of_patient(clinic, patient_id, include_deleted=True):
        if study.is_on_legal_hold:
            summary.held_study_ids.append(study.id)
            continue
        running = study.latest_attempt
        if running is not None and not running.status.is_terminal:
            summary.cancelled_attempts.append(cancel_study(study, actor=actor))
        if _has_result(study):
            summary.deleted_object_count += _erase_keeping_record(study, storage=storage)
            summary.retained.append((study.id, results_expire_at(study, clinic.retention_years)))
        else:
            summary.deleted_object_count += _erase_everything(study, storage=storage)
            summary.erased_study_ids.append(study.id)
    db.session.flush()
    record_privacy_event(
        ERASURE_ACTION,
        clinic_id=clinic.id,
        details={
            "erased_study_ids": [str(study_id) for study_id in summary.erased_study_ids],
            "retained_study_ids": [str(study_id) for study_id, _end in summary.retained],
            "held_study_ids": [str(study_id) for study_id in summary.held_study_ids],
            "deleted_object_count": summary.deleted_object_count,
        },
    )
    logger.info(
        "patient data erasure in clinic %s: %d studies erased, %d retained, %d held",
        clinic.id,
        len(summary.erased_study_ids),
        len(summary.retained),
        len(summary.held_study_ids),
    )
    return summary


def _has_result(study: Study) -> bool:
    return any(attempt.status == StudyStatus.SUCCEEDED for attempt in study.attempts)


def _erase_keeping_record(study: Study, *, storage: Storage) -> int:
    kept_keys = {
        artifact.storage_key
        for artifact in study.artifacts
        if artifact.kind in RECORD_ARTIFACT_KINDS
    }
    # Every stored object that is not part of the record goes, including staging leftovers.
    doomed = set(raw_object_keys(study))
    doomed.update(storage.list_keys(study_prefix(study.clinic_id, study.id)))
    doomed -= kept_keys
    for key in sorted(doomed):
        storage.delete_object(key)
    for artifact in [item for item in study.artifacts if item.kind not in RECORD_ARTIFACT_KINDS]:
        study.artifacts.remove(artifact)
    seal_identifiers(study, dict.fromkeys(ERASED_FIELDS, ""))
    now = utcnow()
    study.raw_data_deleted_at = study.raw_data_deleted_at or now
    study.erasure_requested_at = now
    return len(doomed)


def _erase_everything(study: Study, *, storage: Storage) -> int:
    deleted = remove_study_data(study, storage=storage)
    study.erasure_requested_at = utcnow()
    return deleted


def record_privacy_event(action: str, *, clinic_id: uuid.UUID, details: dict, **target) -> None:
    """Append a privacy event to the clinic's audit chain in the caller's transaction."""
    from portal.audit.services import record

    record(action, clinic_id=clinic_id, details=details, **target)
