"""Patient identifiers: sealed in the database, shown to the clinic, found by patient ID."""

from __future__ import annotations

import base64
import io
import uuid

import pytest

from portal.privacy.crypto import PatientDataCipher, PatientDataUnreadable
from tests.web.conftest import post_multipart
from tests.web.privacy.helpers import (
    Patient,
    process_study,
    study_zip,
    upload_study,
)

PATIENT = Patient()


def test_cipher_round_trip_binds_study_and_field():
    cipher = PatientDataCipher(b"k" * 32)
    study_id = uuid.uuid4()
    sealed = cipher.encrypt("SOUZA^ANA", study_id=study_id, field="patient_name")

    assert b"SOUZA" not in sealed
    assert cipher.decrypt(sealed, study_id=study_id, field="patient_name") == "SOUZA^ANA"
    with pytest.raises(PatientDataUnreadable):
        cipher.decrypt(sealed, study_id=uuid.uuid4(), field="patient_name")
    with pytest.raises(PatientDataUnreadable):
        cipher.decrypt(sealed, study_id=study_id, field="accession_number")
    with pytest.raises(PatientDataUnreadable):
        PatientDataCipher(b"j" * 32).decrypt(sealed, study_id=study_id, field="patient_name")


def test_cipher_uses_a_fresh_nonce():
    cipher = PatientDataCipher(b"k" * 32)
    study_id = uuid.uuid4()
    first = cipher.encrypt("PID-1", study_id=study_id, field="patient_id")
    second = cipher.encrypt("PID-1", study_id=study_id, field="patient_id")
    assert first != second


def test_patient_id_hash_normalizes_and_needs_the_key():
    cipher = PatientDataCipher(b"k" * 32)
    assert cipher.patient_id_hash(" pid-0001 ") == cipher.patient_id_hash("PID-0001")
    assert cipher.patient_id_hash("PID-0001") != cipher.patient_id_hash("PID-0002")
    assert cipher.patient_id_hash("PID-0001") != PatientDataCipher(b"j" * 32).patient_id_hash(
        "PID-0001"
    )


def test_configured_key_is_used(settings):
    import dataclasses

    key = base64.b64encode(b"z" * 32).decode()
    configured = PatientDataCipher.from_settings(
        dataclasses.replace(settings, patient_data_key=key)
    )
    direct = PatientDataCipher(b"z" * 32)
    assert configured.patient_id_hash("PID-1") == direct.patient_id_hash("PID-1")


def test_upload_seals_file_name_and_keeps_basis(app, client, make_clinic, make_api_key, queued):
    from portal.extensions import db
    from portal.privacy.identifiers import open_identifiers
    from portal.studies.models import Study

    token = make_api_key(make_clinic())
    study_id = upload_study(
        client,
        token,
        study_zip(PATIENT),
        file_name="SOUZA_ANA_exame.zip",
        legal_basis="consent",
    )
    with app.app_context():
        from portal.tenancy import all_clinics

        with all_clinics():
            study = db.session.get(Study, uuid.UUID(study_id))
            assert study.legal_basis == "consent"
            assert study.upload_file_name_enc is not None
            assert b"SOUZA" not in bytes(study.upload_file_name_enc)
            assert open_identifiers(study).upload_file_name == "SOUZA_ANA_exame.zip"


def test_upload_defaults_to_health_protection(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload_study(client, token, study_zip(PATIENT), file_name="s.zip")
    body = client.get(
        f"/api/studies/{study_id}/", headers={"Authorization": f"Bearer {token}"}
    ).get_json()
    assert body["legal_basis"] == "health_protection"


def test_upload_rejects_unknown_basis(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(study_zip(PATIENT)), "s.zip"), "legal_basis": "marketing"},
        {"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_legal_basis"
    assert "consent" in response.get_json()["detail"]
    assert queued == []


def test_upload_form_sends_basis(app, client, make_clinic, make_user, login, queued):
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    login(make_user(make_clinic()))
    response = post_multipart(
        client,
        "/studies/new",
        {
            "file": (io.BytesIO(study_zip(PATIENT)), "exame.zip"),
            "categories": ["lung"],
            "legal_basis": "research",
        },
    )
    assert response.status_code == 302
    with app.app_context(), all_clinics():
        study = db.session.scalars(db.select(Study)).one()
        assert study.legal_basis == "research"


def test_processing_seals_identifiers(
    pipeline_app, make_clinic, make_api_key, queued, run_steps_inline
):
    from portal.extensions import db
    from portal.privacy.identifiers import open_identifiers
    from portal.studies.models import Study, StudyStatus
    from portal.tenancy import all_clinics

    client = pipeline_app.test_client()
    token = make_api_key(make_clinic())
    study_id = upload_study(client, token, study_zip(PATIENT), file_name="exame.zip")
    process_study(pipeline_app, study_id)

    with pipeline_app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(study_id))
        assert study.status == StudyStatus.SUCCEEDED, study.latest_attempt.error_code
        opened = open_identifiers(study)
        assert opened.patient_name == PATIENT.name
        assert opened.patient_id == PATIENT.patient_id
        assert opened.birth_date == PATIENT.birth_date
        assert opened.accession_number == PATIENT.accession_number
        for column in ("patient_name_enc", "patient_id_enc", "birth_date_enc"):
            assert PATIENT.patient_id.encode() not in bytes(getattr(study, column))
        report_text = str(study.latest_attempt.report)
        assert "SOUZA" not in report_text
        assert PATIENT.patient_id not in report_text

    body = client.get(
        f"/api/studies/{study_id}/", headers={"Authorization": f"Bearer {token}"}
    ).get_json()
    assert body["patient"]["patient_id"] == PATIENT.patient_id
    assert body["patient"]["birth_date"] == PATIENT.birth_date


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_study_page_and_search_show_patient(
    pipeline_app, make_clinic, make_user, make_api_key, login, queued, run_steps_inline
):
    client = pipeline_app.test_client()
    clinic_id = make_clinic()
    other_clinic_id = make_clinic("Clínica B")
    token = make_api_key(clinic_id)
    study_id = upload_study(client, token, study_zip(PATIENT), file_name="exame.zip")
    other = Patient(name="LIMA^JOSE", patient_id="PID-OTHER-7", accession_number="ACC-7")
    upload_study(client, token, study_zip(other), file_name="outro.zip")
    process_study(pipeline_app, study_id)

    login(make_user(clinic_id), test_client=client)
    page = client.get(f"/studies/{study_id}", headers={"Accept-Language": "en"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "SOUZA, ANA PRIVACY" in text
    assert PATIENT.patient_id in text
    assert PATIENT.accession_number in text
    assert "LGPD art. 11 II f" in text

    found = client.post("/studies/", data={"patient_id": " pid-priv-0001 "})
    found_text = found.get_data(as_text=True)
    assert found.status_code == 200
    assert study_id in found_text
    assert "PID-OTHER-7" not in found_text

    outsider = pipeline_app.test_client()
    login(make_user(other_clinic_id, email="b@example.com"), test_client=outsider)
    assert outsider.get(f"/studies/{study_id}").status_code == 404
    searched = outsider.post("/studies/", data={"patient_id": PATIENT.patient_id})
    assert study_id not in searched.get_data(as_text=True)


def test_search_rejects_overlong_patient_id(app, client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    response = client.post("/studies/", data={"patient_id": "X" * 65})
    assert response.status_code == 400


def test_deleted_study_drops_identifiers(app, client, make_clinic, make_api_key, queued):
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    token = make_api_key(make_clinic())
    study_id = upload_study(client, token, study_zip(PATIENT), file_name="SOUZA.zip")
    with app.app_context(), all_clinics():
        from portal.privacy.identifiers import seal_identifiers

        study = db.session.get(Study, uuid.UUID(study_id))
        seal_identifiers(study, {"patient_id": PATIENT.patient_id, "patient_name": PATIENT.name})
        db.session.commit()

    response = client.delete(
        f"/api/studies/{study_id}/", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 204
    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(study_id))
        assert study.deleted_at is not None
        assert study.patient_id_hash is None
        assert study.patient_name_enc is None
        assert study.patient_id_enc is None
        assert study.upload_file_name_enc is None


@pytest.mark.parametrize(
    ("language", "heading", "sent"),
    [
        ("en", "How Vizier Med treats patient data", "Only the de-identified volume"),
        ("pt-BR", "Como o Vizier Med trata os dados de pacientes", "Só o volume desidentificado"),
    ],
)
def test_privacy_page_is_public(client, language, heading, sent):
    response = client.get("/privacy", headers={"Accept-Language": language})
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert heading in text
    assert sent in text
    assert "LGPD art. 11 II f" in text
    assert "Lei 13.787/2018" in text
    assert "72" in text


def test_footer_links_privacy_page(app, client, make_clinic, make_user, login):
    login(make_user(make_clinic()))
    page = client.get("/studies/").get_data(as_text=True)
    assert 'href="/privacy"' in page
