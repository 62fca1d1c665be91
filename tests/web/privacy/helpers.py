"""Studies with chosen patient identifiers, uploaded and processed in the test process."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

from tests.pipeline.phantoms import SeriesSpec, build_series, series_members
from tests.web.conftest import post_multipart


@dataclass(frozen=True)
class Patient:
    """Identifier values planted in every DICOM header of a study."""

    name: str = "SOUZA^ANA^PRIVACY"
    patient_id: str = "PID-PRIV-0001"
    birth_date: str = "19610203"
    accession_number: str = "ACC-PRIV-0001"


def study_zip(patient: Patient, *, folder: str | None = None) -> bytes:
    """Return a ZIP of a small CT series whose headers name `patient`.

    The member folder carries the patient's name, as clinic exports often do.
    """
    import zipfile

    datasets = build_series(SeriesSpec(slice_count=6))
    for dataset in datasets:
        dataset.PatientName = patient.name
        dataset.PatientID = patient.patient_id
        dataset.PatientBirthDate = patient.birth_date
        dataset.AccessionNumber = patient.accession_number
    members = series_members(datasets, folder or f"{patient.name}/CT")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in members:
            archive.writestr(member.name, member.data)
    return buffer.getvalue()


def upload_study(client, token: str, data: bytes, *, file_name: str, **fields) -> str:
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(data), file_name), **fields},
        {"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def process_study(app, study_id: str) -> None:
    """Run every step of the study's latest attempt to its end, in this process."""
    from portal import tasks
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context():
        with all_clinics():
            attempt_id = db.session.get(Study, uuid.UUID(study_id)).latest_attempt.id
        db.session.remove()
        tasks.convert_attempt.call_local(attempt_id=str(attempt_id))
        db.session.remove()
