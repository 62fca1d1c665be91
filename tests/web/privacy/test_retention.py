"""Retention: raw data after RAW_RETENTION_HOURS, results after the clinic's years, holds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.web.privacy.helpers import (
    Patient,
    process_study,
    study_zip,
    upload_study,
)


@pytest.fixture
def finished_study(pipeline_app, make_clinic, make_api_key, queued, run_steps_inline):
    """Process one study to success; return (app, client, token, study id, clinic id)."""
    client = pipeline_app.test_client()
    clinic_id = make_clinic()
    token = make_api_key(clinic_id)
    study_id = upload_study(client, token, study_zip(Patient()), file_name="exame.zip")
    process_study(pipeline_app, study_id)
    return pipeline_app, client, token, study_id, clinic_id


def stored_keys(app, study_id) -> set[str]:
    from portal.extensions import db
    from portal.storage import study_prefix
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(study_id))
        storage = app.extensions["portal_storage"]
        return set(storage.list_keys(study_prefix(study.clinic_id, study.id)))


def run_retention(app, *, after: timedelta):
    from portal.db_types import utcnow
    from portal.privacy.retention import apply_retention

    with app.app_context():
        return apply_retention(
            settings=app.config["PORTAL_SETTINGS"],
            storage=app.extensions["portal_storage"],
            now=utcnow() + after,
        )


def file_names(keys: set[str]) -> set[str]:
    return {key.rsplit("/", 1)[-1] for key in keys}


def test_raw_data_stays_within_retention(finished_study):
    app, _client, _token, study_id, _clinic_id = finished_study
    before = stored_keys(app, study_id)
    done = run_retention(app, after=timedelta(hours=71))
    assert done == {"raw_data": [], "results": []}
    assert stored_keys(app, study_id) == before


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_raw_data_deleted_after_retention(finished_study):
    app, client, token, study_id, _clinic_id = finished_study
    names_before = file_names(stored_keys(app, study_id))
    assert {"upload.zip", "volume.npz", "inference_result.npz"} <= names_before

    done = run_retention(app, after=timedelta(hours=73))

    assert [str(item) for item in done["raw_data"]] == [study_id]
    names_after = file_names(stored_keys(app, study_id))
    assert "upload.zip" not in names_after
    assert "volume.npz" not in names_after
    assert "inference_result.npz" not in names_after
    assert {"image.nii.gz", "mask.nii.gz", "report.json"} <= names_after
    body = client.get(
        f"/api/studies/{study_id}/", headers={"Authorization": f"Bearer {token}"}
    ).get_json()
    assert body["retention"]["raw_data_deleted_at"] is not None
    assert body["retention"]["can_run_again"] is False
    result = client.get(
        f"/api/studies/{study_id}/result/", headers={"Authorization": f"Bearer {token}"}
    )
    assert result.status_code == 200


def test_rerun_rejected_after_raw_deletion(finished_study, make_user, login):
    app, client, token, study_id, clinic_id = finished_study
    run_retention(app, after=timedelta(hours=73))

    response = client.post(
        f"/api/studies/{study_id}/rerun/",
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
        json={},
    )
    assert response.status_code == 409
    assert response.get_json()["code"] == "study_raw_data_deleted"

    login(make_user(clinic_id), test_client=client)
    page = client.get(f"/studies/{study_id}", headers={"Accept-Language": "en"})
    text = page.get_data(as_text=True)
    assert 'id="raw-data-deleted"' in text
    assert "cannot run again" in text
    assert 'id="rerun-study"' not in text
    assert client.post(f"/studies/{study_id}/rerun").status_code == 409


def test_results_expire_after_clinic_period(finished_study):
    from portal.audit.models import AuditEvent
    from portal.clinics.models import Clinic
    from portal.extensions import db
    from portal.studies.models import Study
    from portal.tenancy import all_clinics

    app, client, token, study_id, clinic_id = finished_study
    with app.app_context(), all_clinics():
        db.session.get(Clinic, clinic_id).retention_years = 1
        db.session.commit()

    assert run_retention(app, after=timedelta(days=364))["results"] == []
    done = run_retention(app, after=timedelta(days=366))

    assert [str(item) for item in done["results"]] == [study_id]
    assert stored_keys(app, study_id) == set()
    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(study_id))
        assert study.results_expired_at is not None
        assert study.deleted_at is not None
        assert study.patient_id_enc is None
        assert study.patient_name_enc is None
        assert study.patient_id_hash is None
        actions = set(
            db.session.scalars(db.select(AuditEvent.action).where(AuditEvent.target_id == study_id))
        )
        assert "study.results_expired" in actions
    response = client.get(f"/api/studies/{study_id}/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_legal_hold_stops_retention(finished_study, make_user, login):
    from portal.audit.models import AuditEvent
    from portal.extensions import db
    from portal.tenancy import all_clinics

    app, client, _token, study_id, clinic_id = finished_study
    admin_id = make_user(clinic_id, role="admin", email="admin@example.com")
    login(admin_id, test_client=client)
    before = stored_keys(app, study_id)

    assert client.post(f"/studies/{study_id}/legal-hold", data={"hold": "on"}).status_code == 302
    done = run_retention(app, after=timedelta(days=366 * 30))

    assert done == {"raw_data": [], "results": []}
    assert stored_keys(app, study_id) == before
    page = client.get(f"/studies/{study_id}").get_data(as_text=True)
    assert 'id="legal-hold-on"' in page

    assert client.post(f"/studies/{study_id}/legal-hold", data={"hold": "off"}).status_code == 302
    assert [str(item) for item in run_retention(app, after=timedelta(hours=73))["raw_data"]] == [
        study_id
    ]
    with app.app_context(), all_clinics():
        events = db.session.execute(
            db.select(AuditEvent.action, AuditEvent.actor_id)
            .where(AuditEvent.target_id == study_id)
            .order_by(AuditEvent.seq)
        ).all()
    hold_events = [event for event in events if "legal_hold" in event.action]
    assert [event.action for event in hold_events] == [
        "study.legal_hold_set",
        "study.legal_hold_lifted",
    ]
    assert all(event.actor_id == str(admin_id) for event in hold_events)


def test_legal_hold_stops_deletion(finished_study, make_user, login):
    app, client, token, study_id, clinic_id = finished_study
    login(make_user(clinic_id, role="admin", email="admin@example.com"), test_client=client)
    assert client.post(f"/studies/{study_id}/legal-hold", data={"hold": "on"}).status_code == 302
    before = stored_keys(app, study_id)
    api = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}

    rejected = client.delete(f"/api/studies/{study_id}/", headers=api)
    page = client.get(f"/studies/{study_id}").get_data(as_text=True)
    rejected_page = client.post(f"/studies/{study_id}/delete")

    assert rejected.status_code == 409
    assert rejected.get_json()["code"] == "study_on_legal_hold"
    assert 'id="delete-study"' not in page
    assert rejected_page.status_code == 409
    assert stored_keys(app, study_id) == before
    assert client.get(f"/api/studies/{study_id}/", headers=api).status_code == 200

    assert client.post(f"/studies/{study_id}/legal-hold", data={"hold": "off"}).status_code == 302
    assert client.delete(f"/api/studies/{study_id}/", headers=api).status_code == 204


def test_doctor_cannot_set_legal_hold(finished_study, make_user, login):
    _app, client, _token, study_id, clinic_id = finished_study
    login(make_user(clinic_id), test_client=client)
    response = client.post(f"/studies/{study_id}/legal-hold", data={"hold": "on"})
    assert response.status_code == 403


def test_running_study_keeps_raw_data(app, client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload_study(client, token, study_zip(Patient()), file_name="s.zip")
    done = run_retention(app, after=timedelta(days=3650))
    assert done == {"raw_data": [], "results": []}
    assert "upload.zip" in file_names(stored_keys(app, study_id))


def test_cli_sets_clinic_retention(app, make_clinic):
    from portal.clinics.models import Clinic
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_id = make_clinic()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["clinics", "set-retention", str(clinic_id), "25"])
    assert result.exit_code == 0, result.output
    with app.app_context(), all_clinics():
        assert db.session.get(Clinic, clinic_id).retention_years == 25
    rejected = runner.invoke(args=["clinics", "set-retention", str(clinic_id), "0"])
    assert rejected.exit_code != 0


def test_cli_retention_prints_counts(app):
    result = app.test_cli_runner().invoke(args=["retention"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["raw_data\t0", "results\t0"]


def test_new_clinic_keeps_results_twenty_years(app, make_clinic):
    from portal.clinics.models import Clinic
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_id = make_clinic()
    with app.app_context(), all_clinics():
        assert db.session.get(Clinic, clinic_id).retention_years == 20
