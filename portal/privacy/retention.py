"""Retention: raw data goes hours after processing ends, results at the clinic's period end.

Raw uploads and the inference input volumes are deleted RAW_RETENTION_HOURS after a
study's last attempt ends; from then on the study cannot run again. Results (the viewer's
NIfTI pair on the model grid and the reports) belong to the medical record and are kept
for the clinic's `retention_years` after the last attempt ended, then deleted with the
identifiers. A legal hold stops both deletions.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from portal.audit import actions
from portal.db_types import utcnow
from portal.extensions import db
from portal.storage import Storage, study_object_key, study_prefix
from portal.studies.models import ArtifactKind, Study

logger = logging.getLogger(__name__)

#: The raw response of the inference API, stored per attempt for the results step.
INFERENCE_RESULT_FILE_NAME = "inference_result.npz"
RAW_ARTIFACT_KINDS = frozenset({ArtifactKind.UPLOAD, ArtifactKind.VOLUME_NPZ})


def last_attempt_end(study: Study) -> datetime | None:
    """Return when the study's latest attempt ended; None while it runs or never ran."""
    attempt = study.latest_attempt
    if attempt is None or not attempt.status.is_terminal:
        return None
    return attempt.finished_at


def raw_data_delete_after(study: Study, settings) -> datetime | None:
    end = last_attempt_end(study)
    return end + timedelta(hours=settings.raw_retention_hours) if end else None


def results_expire_at(study: Study, retention_years: int) -> datetime | None:
    """Return the end of the results' retention; years count as 365.25 days."""
    end = last_attempt_end(study)
    return end + timedelta(days=round(365.25 * retention_years)) if end else None


def retention_facts(study: Study) -> dict:
    """Describe what the study keeps and until when, as datetimes and flags."""
    from flask import current_app

    from portal.clinics.models import Clinic

    settings = current_app.config["PORTAL_SETTINGS"]
    clinic = db.session.get(Clinic, study.clinic_id)
    raw_after = raw_data_delete_after(study, settings)
    return {
        "raw_data_deleted_at": study.raw_data_deleted_at,
        "raw_data_delete_after": raw_after if study.raw_data_deleted_at is None else None,
        "results_expire_at": results_expire_at(study, clinic.retention_years) if clinic else None,
        "legal_hold": study.is_on_legal_hold,
        "erasure_requested_at": study.erasure_requested_at,
        "can_run_again": study.raw_data_deleted_at is None,
    }


def retention_json(study: Study) -> dict:
    """Return `retention_facts` with ISO 8601 times, for the API."""
    return {
        name: _iso(value) if isinstance(value, datetime) else value
        for name, value in retention_facts(study).items()
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


LEGAL_HOLD_ACTIONS = {True: actions.LEGAL_HOLD_SET, False: actions.LEGAL_HOLD_LIFTED}


def set_legal_hold(study: Study, *, on_hold: bool) -> None:
    """Set or lift the study's legal hold and audit the change; the caller commits.

    Setting the state the study already has records nothing.
    """
    if study.is_on_legal_hold == on_hold:
        return
    study.is_on_legal_hold = on_hold
    record_study_event(LEGAL_HOLD_ACTIONS[on_hold], study, {})
    db.session.flush()
    logger.info("legal hold of study %s %s", study.id, "set" if on_hold else "lifted")


def raw_object_keys(study: Study) -> list[str]:
    """Return the keys of the raw upload and of every attempt's inference input and response."""
    keys = [
        artifact.storage_key for artifact in study.artifacts if artifact.kind in RAW_ARTIFACT_KINDS
    ]
    keys += [
        study_object_key(
            study.clinic_id, study.id, INFERENCE_RESULT_FILE_NAME, attempt_id=attempt.id
        )
        for attempt in study.attempts
    ]
    return keys


def delete_raw_data(study: Study, *, storage: Storage) -> int:
    """Delete the raw upload and the inference inputs of `study` and mark it; the caller commits.

    Returns the number of objects deleted (missing ones count too).
    """
    keys = raw_object_keys(study)
    for key in keys:
        storage.delete_object(key)
    for artifact in [item for item in study.artifacts if item.kind in RAW_ARTIFACT_KINDS]:
        study.artifacts.remove(artifact)
    study.raw_data_deleted_at = utcnow()
    record_study_event(actions.RAW_DATA_DELETED, study, {"object_count": len(keys)})
    db.session.flush()
    logger.info("raw data of study %s deleted (%d objects)", study.id, len(keys))
    return len(keys)


def remove_study_data(study: Study, *, storage: Storage) -> int:
    """Delete every object and identifier of a study and mark it deleted; return the count.

    The row stays, without identifiers, as the record that the study existed.
    """
    from portal.privacy.identifiers import SEALED_COLUMNS, seal_identifiers

    deleted = storage.delete_prefix(study_prefix(study.clinic_id, study.id))
    study.artifacts.clear()
    seal_identifiers(study, dict.fromkeys(SEALED_COLUMNS, ""))
    now = utcnow()
    study.raw_data_deleted_at = study.raw_data_deleted_at or now
    study.deleted_at = study.deleted_at or now
    return deleted


def expire_results(study: Study, *, storage: Storage) -> int:
    """Delete every object and identifier of a study whose retention ended; the caller commits."""
    deleted = remove_study_data(study, storage=storage)
    study.results_expired_at = utcnow()
    record_study_event(actions.RESULTS_EXPIRED, study, {"object_count": deleted})
    db.session.flush()
    logger.info("results of study %s expired: %d objects deleted", study.id, deleted)
    return deleted


def record_study_event(action: str, study: Study, details: dict) -> None:
    from portal.privacy.requests import record_privacy_event

    record_privacy_event(
        action, clinic_id=study.clinic_id, details=details, target_type="study", target_id=study.id
    )


def apply_retention(*, settings, storage: Storage, now: datetime | None = None) -> dict:
    """Delete raw data and expired results of every clinic's studies not on legal hold.

    Each study is committed on its own, so a storage outage halfway keeps what was done.
    Returns the ids handled as {"raw_data": [...], "results": [...]}.
    """
    from portal.clinics.models import Clinic
    from portal.tenancy import all_clinics, set_current_clinic

    now = now or utcnow()
    done = {"raw_data": [], "results": []}
    with all_clinics():
        candidates = db.session.execute(
            select(Study.id, Study.clinic_id).where(
                Study.is_on_legal_hold.is_(False), Study.results_expired_at.is_(None)
            )
        ).all()
    db.session.rollback()
    for study_id, clinic_id in candidates:
        set_current_clinic(clinic_id)
        study = db.session.get(Study, study_id, populate_existing=True)
        clinic = db.session.get(Clinic, clinic_id)
        if study is None or clinic is None or study.is_on_legal_hold:
            continue
        expires = results_expire_at(study, clinic.retention_years)
        raw_after = raw_data_delete_after(study, settings)
        if expires is not None and expires <= now:
            expire_results(study, storage=storage)
            done["results"].append(study.id)
        elif (
            study.raw_data_deleted_at is None
            and study.deleted_at is None
            and raw_after is not None
            and raw_after <= now
        ):
            delete_raw_data(study, storage=storage)
            done["raw_data"].append(study.id)
        else:
            continue
        db.session.commit()
    set_current_clinic(None)
    return done
