"""Data subject requests: export and erasure of one patient's data by a clinic admin."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.web.privacy.helpers import (
    Patient,
    process_study,
    study_zip,
    upload_study,
)
from tests.web.privacy.test_retention import file_names, stored_keys

PATIENT = Patient()
OTHER = Patient(
    name="LIMA^JOSE^OTHER",
    patient_id="PID-OTHER-0002",
    birth_date="19770505",
    accession_number="ACC-OTHER-2",
)


@pytest.fixture
def clinic_with_studies(
    pipeline_app, make_clinic, make_api_key, make_user, login, queued, run_steps_inline
):
    """Two processed studies of PATIENT, one study of PATIENT that never ran, one of OTHER.

    Returns (app, admin client, token, ids) with ids "done", "done_again", "unprocessed",
    "other".
    """
    app = pipeline_app
    client = app.test_client()
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    ids = {
        "done": upload_study(client, token, study_zip(PATIENT), file_name="SOUZA_1.zip"),
        "done_again": upload_study(client, token, study_zip(PATIENT), file_name="SOUZA_2.zip"),
        "unprocessed": upload_study(client, token, study_zip(PATIENT), file_name="SOUZA_3.zip"),
        "other": upload_study(client, token, study_zip(OTHER), file_name="LIMA.zip"),
    }
    for name in ("done", "done_again", "other"):
        process_study(app, ids[name])
    # Only conversion reads the patient ID from the headers, so the test seals it for the
    # unprocessed study as conversion would.
    with app.app_context():
        from portal.extensions import db
        from portal.privacy.identifiers import seal_identifiers
        from portal.studies.models import Study
        from portal.tenancy import all_clinics

        with all_clinics():
            study = db.session.get(Study, uuid.UUID(ids["unprocessed"]))
            seal_identifiers(
                study, {"patient_id": PATIENT.patient_id, "patient_name": PATIENT.name}
            )
            db.session.commit()
    admin_id = make_user(clinic_id, role="admin", email="admin@example.com")
    login(admin_id, test_client=client)
    return app, client, token, ids


def test_lookup_lists_the_patients_studies(clinic_with_studies):
    _app, client, _token, ids = clinic_with_studies
    response = client.post("/clinic/patient-data/", data={"patient_id": PATIENT.patient_id})
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="patient-studies"' in text
    assert text.count("<tr>") == 4  # the header row and three studies


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_export_holds_records_results_and_events(clinic_with_studies):
    _app, client, token, ids = clinic_with_studies
    # Setting and lifting a legal hold are events about the study that the export carries.
    client.post(f"/studies/{ids['done']}/legal-hold", data={"hold": "on"})
    client.post(f"/studies/{ids['done']}/legal-hold", data={"hold": "off"})

    response = client.post("/clinic/patient-data/export", data={"patient_id": PATIENT.patient_id})
    body = response.data
    response.close()

    assert response.status_code == 200
    exports_dir = Path(_app.config["PORTAL_SETTINGS"].data_dir) / "exports"
    assert list(exports_dir.iterdir()) == []
    assert response.mimetype == "application/zip"
    assert response.headers["Cache-Control"] == "no-store"
    archive = zipfile.ZipFile(io.BytesIO(body))
    names = set(archive.namelist())
    for name in ("done", "done_again", "unprocessed"):
        assert f"studies/{ids[name]}/study.json" in names
    assert not any(ids["other"] in name for name in names)
    done = f"studies/{ids['done']}"
    assert f"{done}/attempts/1/report.json" in names
    assert f"{done}/attempts/1/label_stats.json" in names
    assert f"{done}/attempts/1/image.nii.gz" in names
    assert f"{done}/attempts/1/mask.nii.gz" in names
    assert not any(name.endswith(("upload.zip", "volume.npz")) for name in names)
    assert not any("SOUZA" in name for name in names)

    record = json.loads(archive.read(f"{done}/study.json"))
    assert record["patient"]["patient_name"] == PATIENT.name
    assert record["patient"]["birth_date"] == PATIENT.birth_date
    assert record["patient"]["file_name"] == "SOUZA_1.zip"
    assert record["legal_basis"]["code"] == "health_protection"
    assert record["attempts"][0]["status"] == "succeeded"

    events = json.loads(archive.read("audit_events.json"))
    hold_actions = [event["action"] for event in events if event["target_id"] == ids["done"]]
    assert hold_actions[-2:] == ["study.legal_hold_set", "study.legal_hold_lifted"]
    assert {event["target_id"] for event in events} <= {
        ids["done"],
        ids["done_again"],
        ids["unprocessed"],
    }


def test_export_is_audited_without_identifiers(clinic_with_studies):
    from portal.audit.models import AuditEvent
    from portal.extensions import db
    from portal.tenancy import all_clinics

    app, client, _token, ids = clinic_with_studies
    client.post("/clinic/patient-data/export", data={"patient_id": PATIENT.patient_id}).close()

    with app.app_context(), all_clinics():
        event = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "patient_data.exported")
        ).one()
        text = json.dumps(event.details)
    assert sorted(json.loads(text)["study_ids"]) == sorted(
        [ids["done"], ids["done_again"], ids["unprocessed"]]
    )
    assert PATIENT.patient_id not in text
    assert "SOUZA" not in text


def test_erasure_requires_confirmation(clinic_with_studies):
    app, client, _token, ids = clinic_with_studies
    before = stored_keys(app, ids["done"])
    response = client.post("/clinic/patient-data/erase", data={"patient_id": PATIENT.patient_id})
    assert response.status_code == 400
    assert stored_keys(app, ids["done"]) == before


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_erasure_keeps_only_the_record(clinic_with_studies):
    from portal.audit.models import AuditEvent
    from portal.extensions import db
    from portal.privacy.identifiers import open_identifiers
    from portal.studies.models import Study, StudyStatus
    from portal.tenancy import all_clinics

    app, client, token, ids = clinic_with_studies
    other_before = stored_keys(app, ids["other"])

    response = client.post(
        "/clinic/patient-data/erase",
        data={"patient_id": PATIENT.patient_id, "confirm": "y"},
        headers={"Accept-Language": "en"},
    )

    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="retained-studies"' in text
    assert "LGPD art. 16 I" in text
    assert ids["done"] in text
    assert ids["done_again"] in text

    for name in ("done", "done_again"):
        assert file_names(stored_keys(app, ids[name])) == {
            "image.nii.gz",
            "mask.nii.gz",
            "report.json",
        }
    assert stored_keys(app, ids["unprocessed"]) == set()
    assert stored_keys(app, ids["other"]) == other_before

    with app.app_context(), all_clinics():
        kept_study = db.session.get(Study, uuid.UUID(ids["done"]))
        opened = open_identifiers(kept_study)
        assert opened.patient_id == PATIENT.patient_id
        assert opened.patient_name is None
        assert opened.birth_date is None
        assert opened.accession_number is None
        assert opened.upload_file_name is None
        assert kept_study.erasure_requested_at is not None
        assert kept_study.deleted_at is None

        erased_study = db.session.get(Study, uuid.UUID(ids["unprocessed"]))
        assert erased_study.deleted_at is not None
        assert erased_study.latest_attempt.status == StudyStatus.CANCELLED
        assert erased_study.latest_attempt.cancelled_by_user_id is not None
        assert erased_study.patient_id_hash is None
        assert all(
            getattr(erased_study, column) is None
            for column in (
                "patient_name_enc",
                "patient_id_enc",
                "birth_date_enc",
                "accession_number_enc",
                "upload_file_name_enc",
            )
        )
        other = open_identifiers(db.session.get(Study, uuid.UUID(ids["other"])))
        assert other.patient_name == OTHER.name

        tombstone = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "patient_data.erased")
        ).one()
        tombstone_text = json.dumps(tombstone.details)
    assert ids["unprocessed"] in tombstone_text
    assert PATIENT.patient_id not in tombstone_text
    assert "SOUZA" not in tombstone_text

    page = client.get(f"/studies/{ids['done']}", headers={"Accept-Language": "en"})
    page_text = page.get_data(as_text=True)
    assert 'id="erasure-requested"' in page_text
    assert "at the patient's request, so this study cannot run again" in page_text
    assert "at the end of their retention period" not in page_text
    result = client.get(
        f"/api/studies/{ids['done']}/result/", headers={"Authorization": f"Bearer {token}"}
    )
    assert result.status_code == 200


def test_erasure_skips_studies_on_hold(clinic_with_studies):
    app, client, _token, ids = clinic_with_studies
    client.post(f"/studies/{ids['done']}/legal-hold", data={"hold": "on"})
    before = stored_keys(app, ids["done"])

    response = client.post(
        "/clinic/patient-data/erase", data={"patient_id": PATIENT.patient_id, "confirm": "y"}
    )

    assert response.status_code == 200
    assert 'id="held-studies"' in response.get_data(as_text=True)
    assert stored_keys(app, ids["done"]) == before
    assert "upload.zip" not in file_names(stored_keys(app, ids["done_again"]))


def test_doctor_cannot_request_patient_data(clinic_with_studies, make_user, login):
    app, _client, _token, _ids = clinic_with_studies
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        clinic_id = db.session.scalars(db.select(Study.clinic_id)).first()
    doctor = app.test_client()
    login(make_user(clinic_id, email="doc@example.com"), test_client=doctor)
    for path in ("/clinic/patient-data/export", "/clinic/patient-data/erase"):
        response = doctor.post(path, data={"patient_id": PATIENT.patient_id, "confirm": "y"})
        assert response.status_code == 403
