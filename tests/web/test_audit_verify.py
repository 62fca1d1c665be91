"""`audit verify` and `audit anchor` against chains tampered with by the tables' owner.

The owner switches the append-only trigger off for the length of one change, as an
attacker with the owner's password could. The application's role cannot do that.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from portal.audit import record
from portal.audit.chain import event_fields, event_hash
from portal.audit.integrity import anchor_chain_heads
from portal.db_types import utcnow
from portal.extensions import db
from tests.web.test_audit_core import chain_events, owner_connection

postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def clinic_chain(app, make_clinic):
    """Record four events for a new clinic; return the clinic id and the events' ids by seq."""
    clinic_id = make_clinic()
    with app.app_context():
        for number in range(1, 5):
            record(
                "study.viewed",
                target_type="study",
                target_id=f"study-{number}",
                clinic_id=clinic_id,
                details={"number": number},
            )
        db.session.commit()
        ids = {event.seq: str(event.id) for event in chain_events(str(clinic_id))}
    return clinic_id, ids


def tamper(app, *statements: tuple[str, dict]) -> None:
    """Run statements as the owner with the append-only trigger off, then switch it on."""
    with owner_connection(app) as connection, connection.begin():
        connection.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        for statement, parameters in statements:
            connection.execute(text(statement), parameters)
        connection.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))


def verify(app, *arguments: str):
    return app.test_cli_runner().invoke(args=["audit", "verify", *arguments])


@postgresql
def test_intact_chain_verifies(app, clinic_chain):
    clinic_id, _ids = clinic_chain

    result = verify(app)

    assert result.exit_code == 0, result.output
    assert f"ok {clinic_id}: 4 events" in result.output


@postgresql
def test_altered_details_reported_at_event(app, clinic_chain):
    clinic_id, ids = clinic_chain
    tamper(
        app,
        (
            "UPDATE audit_event SET details = CAST(:details AS json) WHERE id = :id",
            {"details": '{"number": 20}', "id": ids[2]},
        ),
    )

    result = verify(app, "--clinic", str(clinic_id))

    assert result.exit_code == 1
    assert f"BROKEN chain {clinic_id}: seq 2 (event {ids[2]})" in result.output
    assert "altered" in result.output


@postgresql
def test_deleted_event_reported_at_next(app, clinic_chain):
    clinic_id, ids = clinic_chain
    tamper(app, ("DELETE FROM audit_event WHERE id = :id", {"id": ids[2]}))

    result = verify(app)

    assert result.exit_code == 1
    assert f"seq 3 (event {ids[3]})" in result.output
    assert "deleted or renumbered" in result.output


@postgresql
def test_swapped_events_reported(app, clinic_chain):
    clinic_id, ids = clinic_chain
    tamper(
        app,
        ("UPDATE audit_event SET seq = -1 WHERE id = :id", {"id": ids[2]}),
        ("UPDATE audit_event SET seq = 2 WHERE id = :id", {"id": ids[3]}),
        ("UPDATE audit_event SET seq = 3 WHERE id = :id", {"id": ids[2]}),
    )

    result = verify(app)

    assert result.exit_code == 1
    assert f"seq 2 (event {ids[3]})" in result.output
    assert "prev_hash" in result.output


@postgresql
def test_deleted_last_event_reported(app, clinic_chain):
    clinic_id, ids = clinic_chain
    tamper(app, ("DELETE FROM audit_event WHERE id = :id", {"id": ids[4]}))

    result = verify(app)

    assert result.exit_code == 1
    assert f"BROKEN chain {clinic_id}: end of chain" in result.output
    assert "head is at seq 4 but the last event is seq 3" in result.output


@postgresql
def test_rebuilt_chain_fails_against_anchor(app, clinic_chain):
    clinic_id, ids = clinic_chain
    anchor = app.test_cli_runner().invoke(args=["audit", "anchor"])
    assert anchor.exit_code == 0, anchor.output
    # Alter the first event, then recompute every hash after it and the head, so that
    # the chain is consistent in itself: only the anchor can tell.
    with app.app_context():
        events = chain_events(str(clinic_id))
        db.session.expunge_all()
    statements = []
    previous_hash = events[0].prev_hash
    for event in events:
        if event.seq == 1:
            event.details = {"number": 100}
        event.prev_hash = previous_hash
        event.hash = event_hash(event_fields(event))
        previous_hash = event.hash
        statements.append(
            (
                "UPDATE audit_event SET details = CAST(:details AS json), prev_hash = :prev, "
                "hash = :hash WHERE id = :id",
                {
                    "details": json.dumps(event.details),
                    "prev": event.prev_hash,
                    "hash": event.hash,
                    "id": str(event.id),
                },
            )
        )
    statements.append(
        (
            "UPDATE audit_chain_head SET hash = :hash WHERE chain = :chain",
            {"hash": previous_hash, "chain": str(clinic_id)},
        )
    )
    tamper(app, *statements)

    without_anchor = verify(app, "--no-anchors")
    with_anchor = verify(app)

    assert without_anchor.exit_code == 0, without_anchor.output
    assert with_anchor.exit_code == 1
    assert f"seq 4 (event {ids[4]})" in with_anchor.output
    assert "latest anchor" in with_anchor.output


@postgresql
def test_anchor_writes_each_chain_head(app, clinic_chain):
    clinic_id, _ids = clinic_chain
    with app.app_context():
        record("auth.sign_in", outcome="failed")
        db.session.commit()

    result = app.test_cli_runner().invoke(args=["audit", "anchor"])

    assert result.exit_code == 0, result.output
    keys = result.output.split()
    assert len(keys) == 2
    assert any(key.startswith(f"audit/{clinic_id}/heads/") for key in keys)
    assert any(key.startswith("audit/platform/heads/") for key in keys)
    with app.app_context():
        storage = app.extensions["portal_storage"]
        clinic_key = next(key for key in keys if str(clinic_id) in key)
        document = json.loads(storage.read_bytes(clinic_key))
        last = chain_events(str(clinic_id))[-1]
    assert document["seq"] == 4
    assert document["hash"] == last.hash
    assert document["clinic_id"] == str(clinic_id)


def test_verify_rejects_invalid_clinic(app):
    result = verify(app, "--clinic", "not-a-uuid")

    assert result.exit_code == 2
    assert "is not a clinic id" in result.output


def test_verify_on_sqlite_finds_altered_row(app, clinic_chain):
    clinic_id, ids = clinic_chain
    with app.app_context():
        # SQLite has no trigger, so the change needs no bypass there.
        db.session.execute(
            text("UPDATE audit_event SET target_id = 'other' WHERE id = :id"),
            {"id": ids[3].replace("-", "")},
        )
        db.session.commit()

    result = verify(app)

    assert result.exit_code == 1
    assert f"seq 3 (event {ids[3]})" in result.output


class RecordingStorage:
    """A stand-in for Storage that keeps what `put_bytes` was given."""

    def __init__(self):
        self.puts = []

    def put_bytes(self, key, body, *, content_type, bucket=None, retain_until=None):
        self.puts.append({"key": key, "bucket": bucket, "retain_until": retain_until})


def test_anchor_requests_object_lock_when_configured(make_app, make_clinic):
    app = make_app(audit_anchor_bucket="audit-heads", audit_anchor_retention_days=30)
    clinic_id = make_clinic()
    with app.app_context():
        record("study.viewed", clinic_id=clinic_id)
        db.session.commit()
        storage = RecordingStorage()
        anchor_chain_heads(storage)

    assert len(storage.puts) == 1
    put = storage.puts[0]
    assert put["bucket"] == "audit-heads"
    assert put["key"].startswith(f"audit/{clinic_id}/heads/")
    remaining = put["retain_until"] - utcnow()
    assert 29 < remaining.total_seconds() / 86400 <= 30


def test_negative_anchor_retention_rejected():
    from portal.config import ConfigurationError, Settings

    with pytest.raises(ConfigurationError, match="AUDIT_ANCHOR_RETENTION_DAYS=-1"):
        Settings.from_env({"AUDIT_ANCHOR_RETENTION_DAYS": "-1"})


def test_verify_without_storage_names_the_fix(make_app, make_clinic):
    # Nothing listens on the discard port of the loopback address, so every call fails.
    app = make_app(s3_endpoint_url="http://127.0.0.1:9", storage_retry_window_s=0.1)
    clinic_id = make_clinic()
    with app.app_context():
        record("study.viewed", clinic_id=clinic_id)
        db.session.commit()

    with_anchors = verify(app)
    without_anchors = verify(app, "--no-anchors")

    assert with_anchors.exit_code == 1
    assert "could not be read from object storage" in with_anchors.output
    assert "--no-anchors" in with_anchors.output
    assert without_anchors.exit_code == 0, without_anchors.output


def test_hourly_task_anchors_chain_heads(app, clinic_chain):
    from datetime import datetime

    from portal import tasks

    clinic_id, _ids = clinic_chain
    with app.app_context():
        tasks.anchor_audit_chains.call_local()
        keys = app.extensions["portal_storage"].list_keys(f"audit/{clinic_id}/heads/")

    due_at_minute_7 = [task.name for task in tasks.huey.read_periodic(datetime(2026, 1, 1, 3, 7))]
    due_at_minute_8 = [task.name for task in tasks.huey.read_periodic(datetime(2026, 1, 1, 3, 8))]
    assert len(keys) == 1
    assert "anchor_audit_chains" in due_at_minute_7
    assert "anchor_audit_chains" not in due_at_minute_8
