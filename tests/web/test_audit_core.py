"""The audit core: recording, the hash chain, the details guard and the append-only table."""

from __future__ import annotations

import contextlib
import threading

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from portal.audit import AuditActor, record
from portal.audit.chain import find_chain_break
from portal.audit.details import REDACTED_KEYS, clean_details
from portal.audit.models import GENESIS_HASH, PLATFORM_CHAIN, ActorType, AuditEvent, Outcome
from portal.extensions import db
from portal.tenancy import all_clinics

postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SEE_ALL_CLINICS = text("SELECT set_config('app.clinic_id', '*', true)")
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@contextlib.contextmanager
def owner_connection(app):
    """Connect as the tables' owner, the role that runs the migrations."""
    engine = create_engine(app.config["PORTAL_SETTINGS"].migration_database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def chain_events(chain: str) -> list[AuditEvent]:
    with all_clinics():
        return list(
            db.session.scalars(
                select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            )
        )


@both_databases
def test_record_links_events_of_a_clinic(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        for number in range(3):
            record("study.viewed", target_type="study", target_id=f"s{number}", clinic_id=clinic_id)
        db.session.commit()
        db.session.expire_all()
        events = chain_events(str(clinic_id))

    assert [event.seq for event in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    assert find_chain_break(str(clinic_id), events) is None
    assert events[0].actor_type == ActorType.SYSTEM
    assert events[0].outcome == Outcome.SUCCESS


@both_databases
def test_event_without_clinic_goes_to_platform_chain(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        record("auth.sign_in", outcome="failed", actor=AuditActor(ActorType.ANONYMOUS))
        record("study.viewed", clinic_id=clinic_id)
        db.session.commit()
        platform = chain_events(PLATFORM_CHAIN)
        clinic = chain_events(str(clinic_id))

    assert [(event.seq, event.action, event.clinic_id) for event in platform] == [
        (1, "auth.sign_in", None)
    ]
    assert [(event.seq, event.action) for event in clinic] == [(1, "study.viewed")]


@both_databases
def test_rolled_back_action_leaves_no_event(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        record("study.deleted", clinic_id=clinic_id)
        db.session.rollback()
        record("study.viewed", clinic_id=clinic_id)
        db.session.commit()
        events = chain_events(str(clinic_id))

    assert [(event.seq, event.action) for event in events] == [(1, "study.viewed")]
    assert events[0].prev_hash == GENESIS_HASH


def test_altered_event_breaks_the_chain(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        for _ in range(3):
            record("study.viewed", clinic_id=clinic_id, details={"attempt": 1})
        db.session.commit()
        events = chain_events(str(clinic_id))
        db.session.expunge_all()
    events[1].details = {"attempt": 2}

    found = find_chain_break(str(clinic_id), events)

    assert found is not None
    assert found.seq == 2
    assert found.event_id == str(events[1].id)
    assert "altered" in found.problem


def test_details_guard_drops_patient_data_and_secrets():
    details = {
        "attempt": 2,
        "grid": "native",
        "patient_name": "SILVA^MARIA",
        "PatientID": "123",
        "birth_date": "19800101",
        "token": "abc",
        "image_url": "http://127.0.0.1:9000/bucket/key?X-Amz-Signature=1",
        "note": "see https://example.invalid/x",
        "label": "SILVA^MARIA",
        "key": "vzm_0123_secret",
        "silva maria": 1,
        "nested": {"a": 1},
        "categories": ["lung", "bone"],
    }

    cleaned = clean_details(details, action="test")

    assert cleaned["attempt"] == 2
    assert cleaned["grid"] == "native"
    assert cleaned["categories"] == ["lung", "bone"]
    kept = set(cleaned) - {REDACTED_KEYS}
    assert kept == {"attempt", "grid", "categories"}
    assert cleaned[REDACTED_KEYS] == sorted(
        {
            "patient_name",
            "invalid_key",
            "birth_date",
            "token",
            "image_url",
            "note",
            "label",
            "key",
            "nested",
        }
    )
    assert "silva maria" not in str(cleaned)
    assert "SILVA" not in str(cleaned)


@both_databases
def test_recorded_details_pass_the_guard(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        event_id = record(
            "study.viewed", clinic_id=clinic_id, details={"patient_id": "P-1", "n": 1}
        ).id
        db.session.commit()
        with all_clinics():
            details = dict(db.session.get(AuditEvent, event_id).details)

    assert details == {"n": 1, REDACTED_KEYS: ["patient_id"]}


@postgresql
def test_trigger_rejects_update_and_delete(app, make_clinic):
    clinic_id = make_clinic()
    with app.app_context():
        event_id = record("study.viewed", clinic_id=clinic_id).id
        db.session.commit()
        for statement in (
            "UPDATE audit_event SET action = 'x' WHERE id = :id",
            "DELETE FROM audit_event WHERE id = :id",
        ):
            # Without the '*' scope the row would be invisible, and a statement that
            # matches no row fires no row trigger.
            db.session.execute(SEE_ALL_CLINICS)
            with pytest.raises(DBAPIError, match="append-only"):
                db.session.execute(text(statement), {"id": event_id})
            db.session.rollback()
        # The owner is refused too, as long as it leaves the trigger on.
        with owner_connection(app) as connection:
            for statement in (
                "UPDATE audit_event SET action = 'x' WHERE id = :id",
                "DELETE FROM audit_event WHERE id = :id",
                "TRUNCATE audit_event",
            ):
                with pytest.raises(DBAPIError, match="append-only"):
                    with connection.begin():
                        connection.execute(text(statement), {"id": event_id})
        remaining = chain_events(str(clinic_id))

    assert [event.action for event in remaining] == ["study.viewed"]


@postgresql
def test_concurrent_records_keep_one_linear_chain(app, make_clinic):
    clinic_id = make_clinic()
    threads_count, per_thread = 6, 5
    errors = []
    start = threading.Barrier(threads_count)

    def work(number):
        try:
            with app.app_context():
                start.wait()
                for index in range(per_thread):
                    record(
                        "study.viewed",
                        clinic_id=clinic_id,
                        target_id=f"{number}-{index}",
                    )
                    db.session.commit()
                db.session.remove()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with app.app_context():
        events = chain_events(str(clinic_id))
    assert [event.seq for event in events] == list(range(1, threads_count * per_thread + 1))
    assert len({event.target_id for event in events}) == threads_count * per_thread
    assert find_chain_break(str(clinic_id), events) is None


@postgresql
def test_application_role_sees_only_its_clinic_events(app, make_clinic):
    from portal.tenancy import set_current_clinic

    clinic_a, clinic_b = make_clinic("A"), make_clinic("B")
    with app.app_context():
        record("study.viewed", clinic_id=clinic_a)
        record("study.viewed", clinic_id=clinic_b)
        record("auth.sign_in", outcome="failed")
        db.session.commit()
        set_current_clinic(clinic_a)
        visible = db.session.execute(text("SELECT clinic_id FROM audit_event")).scalars().all()

    assert visible == [clinic_a]
