"""Seal a study's patient identifiers, open them for the clinic's members, find by patient ID."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app
from flask_babel import lazy_gettext as _l

from portal.clinics.models import Clinic
from portal.errors import UserFacingError
from portal.extensions import db
from portal.privacy.crypto import PatientDataCipher, PatientDataUnreadable, normalize_patient_id
from portal.privacy.legal_basis import LEGAL_BASES
from portal.studies.models import DEFAULT_LEGAL_BASIS, Study
from portal.tenancy import scoped

logger = logging.getLogger(__name__)

#: Study columns that hold a sealed identifier, by the field name bound into the ciphertext.
SEALED_COLUMNS = {
    "patient_name": "patient_name_enc",
    "patient_id": "patient_id_enc",
    "birth_date": "birth_date_enc",
    "accession_number": "accession_number_enc",
    "upload_file_name": "upload_file_name_enc",
}

#: Maximum length of a patient ID in a search, in characters, as DICOM's LO value allows.
MAX_PATIENT_ID_LENGTH = 64


class InvalidLegalBasis(UserFacingError):
    code = "invalid_legal_basis"
    status = 400
    title = _l("Invalid legal basis")
    message = _l("Unknown legal basis: %(value)s. Use one of: %(codes)s.")


class InvalidPatientId(UserFacingError):
    code = "invalid_patient_id"
    status = 400
    title = _l("Invalid patient ID")
    message = _l("Enter the patient ID as the DICOM study has it, at most 64 characters.")


@dataclass(frozen=True)
class StudyIdentifiers:
    """The opened identifiers of one study; None where absent, erased or unreadable."""

    patient_name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    accession_number: str | None = None
    upload_file_name: str | None = None

    def to_json(self) -> dict:
        return {
            "patient_name": self.patient_name,
            "patient_id": self.patient_id,
            "birth_date": self.birth_date,
            "accession_number": self.accession_number,
            "file_name": self.upload_file_name,
        }


def patient_cipher() -> PatientDataCipher:
    """Return the app's cipher, built once from the settings."""
    cipher = current_app.extensions.get("patient_data_cipher")
    if cipher is None:
        cipher = PatientDataCipher.from_settings(current_app.config["PORTAL_SETTINGS"])
        current_app.extensions["patient_data_cipher"] = cipher
    return cipher


def check_legal_basis(code: str | None) -> str:
    """Return the legal basis code to store: the default when empty, else a listed code."""
    code = (code or "").strip() or DEFAULT_LEGAL_BASIS
    if code not in LEGAL_BASES:
        raise InvalidLegalBasis(value=code[:40], codes=", ".join(LEGAL_BASES))
    return code


def seal_identifiers(study: Study, values: dict[str, str]) -> None:
    """Encrypt each non-empty value of `values` (keys of SEALED_COLUMNS) into the study.

    An empty value clears the column. The patient ID also sets the search hash.
    """
    cipher = patient_cipher()
    for field, value in values.items():
        column = SEALED_COLUMNS[field]
        sealed = cipher.encrypt(value, study_id=study.id, field=field) if value else None
        setattr(study, column, sealed)
        if field == "patient_id":
            study.patient_id_hash = cipher.patient_id_hash(value) if value else None


def open_identifiers(study: Study) -> StudyIdentifiers:
    """Decrypt the study's identifiers; a value that fails to decrypt reads as None."""
    cipher = patient_cipher()
    opened = {}
    for field, column in SEALED_COLUMNS.items():
        token = getattr(study, column)
        if token is None:
            opened[field] = None
            continue
        try:
            opened[field] = cipher.decrypt(bytes(token), study_id=study.id, field=field)
        except PatientDataUnreadable:
            # The key changed or the bytes were altered; the message names no value.
            logger.error("patient data %s of study %s is unreadable", field, study.id)
            opened[field] = None
    return StudyIdentifiers(**opened)


def patient_id_hash(patient_id: str) -> str:
    """Return the search hash of a patient ID typed by a user; raise InvalidPatientId."""
    normalized = normalize_patient_id(patient_id or "")
    if not normalized or len(normalized) > MAX_PATIENT_ID_LENGTH:
        raise InvalidPatientId()
    return patient_cipher().patient_id_hash(normalized)


def studies_of_patient(clinic: Clinic, patient_id: str, *, include_deleted: bool = False):
    """Return the clinic's studies whose patient ID matches, newest first."""
    query = scoped(Study, clinic.id).where(Study.patient_id_hash == patient_id_hash(patient_id))
    if not include_deleted:
        query = query.where(Study.deleted_at.is_(None))
    return list(db.session.scalars(query.order_by(Study.created_at.desc())))
