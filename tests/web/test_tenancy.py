"""Tenant isolation below the query scope: PostgreSQL row-level security and seat locks."""

from __future__ import annotations

import io
import threading
import uuid

import pytest
from sqlalchemy import text

from tests.web.clinic_helpers import create_invitation
from tests.web.conftest import post_multipart, zip_bytes

postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def upload_study(client, token) -> str:
    response = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        {"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


@pytest.fixture
def make_two_clinics(app, client, make_clinic, make_api_key, queued):
    """Return a function that creates clinics A and B with one study each."""

    def make():
        clinic_a, clinic_b = make_clinic("Clínica A"), make_clinic("Clínica B")
        token_a, token_b = make_api_key(clinic_a), make_api_key(clinic_b)
        return {
            "clinic_a": clinic_a,
            "clinic_b": clinic_b,
            "token_a": token_a,
            "study_a": upload_study(client, token_a),
            "study_b": upload_study(client, token_b),
        }

    return make


def test_scoped_requires_tenant_table_and_clinic():
    from portal.clinics.models import Clinic, Membership
    from portal.tenancy import scoped

    with pytest.raises(TypeError):
        scoped(Clinic, uuid.uuid4())
    with pytest.raises(ValueError):
        scoped(Membership, None)
    clinic_id = uuid.uuid4()
    query = scoped(Membership, clinic_id)
    assert "membership.clinic_id = :clinic_id_1" in str(query)


@postgresql
def test_tenant_tables_have_forced_policies(app):
    from portal.extensions import db

    with app.app_context():
        rows = db.session.execute(
            text(
                """
                SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                       pg_get_userbyid(c.relowner) = current_user AS owned_by_app
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'r'
                  AND EXISTS (
                      SELECT 1 FROM information_schema.columns col
                      WHERE col.table_schema = 'public' AND col.table_name = c.relname
                        AND col.column_name = 'clinic_id')
                ORDER BY c.relname
                """
            )
        ).all()
        role = db.session.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
    assert [row.relname for row in rows] == [
        "api_key",
        "artifact",
        "attempt",
        "audit_chain_head",
        "audit_event",
        "invitation",
        "membership",
        "study",
    ]
    for row in rows:
        assert row.relrowsecurity, row.relname
        assert row.relforcerowsecurity, row.relname
        assert not row.owned_by_app, row.relname
    assert tuple(role) == (False, False)


@postgresql
def test_raw_sql_in_request_sees_only_own_clinic(app, make_user, login, make_two_clinics):
    from flask import g, jsonify

    from portal.api.auth import api_key_required
    from portal.clinics.context import clinic_member_required
    from portal.extensions import db

    unscoped_study_clinics = "SELECT id::text, clinic_id::text FROM study"

    # Raw SQL with no WHERE clause, as a careless query would be written.
    @clinic_member_required
    def page_query():
        rows = db.session.execute(text(unscoped_study_clinics)).all()
        return jsonify({"clinic": str(g.clinic.id), "rows": [list(row) for row in rows]})

    @api_key_required
    def api_query():
        rows = db.session.execute(text(unscoped_study_clinics)).all()
        return jsonify({"clinic": str(g.clinic.id), "rows": [list(row) for row in rows]})

    app.add_url_rule("/test-raw-sql", view_func=page_query)
    app.add_url_rule("/api/test-raw-sql/", view_func=api_query)

    world = make_two_clinics()
    doctor_a = app.test_client()
    login(make_user(world["clinic_a"], email="a@a.example"), test_client=doctor_a)
    page = doctor_a.get("/test-raw-sql").get_json()
    assert page["rows"] == [[world["study_a"], str(world["clinic_a"])]]

    api = doctor_a.get(
        "/api/test-raw-sql/", headers={"Authorization": f"Bearer {world['token_a']}"}
    ).get_json()
    assert api["rows"] == [[world["study_a"], str(world["clinic_a"])]]


@postgresql
def test_without_clinic_tenant_tables_look_empty(app, make_two_clinics):
    from portal.extensions import db
    from portal.tenancy import all_clinics, set_current_clinic

    world = make_two_clinics()
    count_studies = text("SELECT count(*) FROM study")
    with app.app_context():
        assert db.session.scalar(count_studies) == 0
        assert db.session.scalar(text("SELECT count(*) FROM api_key")) == 0
        with all_clinics():
            assert db.session.scalar(count_studies) == 2
        assert db.session.scalar(count_studies) == 0
        set_current_clinic(world["clinic_b"])
        assert db.session.scalar(text("SELECT id::text FROM study")) == world["study_b"]
        db.session.commit()
        # The clinic stays set for the next transaction of the same session.
        assert db.session.scalar(count_studies) == 1


@postgresql
def test_writing_a_row_of_another_clinic_is_rejected(app, make_two_clinics):
    import sqlalchemy.exc

    from portal.clinics.models import ApiKey
    from portal.extensions import db
    from portal.tenancy import set_current_clinic

    world = make_two_clinics()
    with app.app_context():
        set_current_clinic(world["clinic_a"])
        db.session.add(
            ApiKey(clinic_id=world["clinic_b"], name="x", key_id="k" * 16, secret_sha256="0" * 64)
        )
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="row-level security"):
            db.session.flush()
        db.session.rollback()


@postgresql
def test_task_scope_follows_attempt_clinic(app, make_two_clinics):
    from portal.extensions import db
    from portal.studies.models import Attempt
    from portal.tenancy import all_clinics, set_clinic_of

    world = make_two_clinics()
    with app.app_context():
        with all_clinics():
            attempt_b = db.session.scalar(
                text("SELECT id FROM attempt WHERE study_id = :study"),
                {"study": world["study_b"]},
            )
        assert set_clinic_of(Attempt, attempt_b) == world["clinic_b"]
        rows = db.session.execute(text("SELECT clinic_id FROM attempt")).scalars().all()
        assert rows == [world["clinic_b"]]
        assert set_clinic_of(Attempt, uuid.uuid4()) is None
        assert db.session.scalar(text("SELECT count(*) FROM attempt")) == 0


@postgresql
def test_ten_acceptances_fill_one_free_seat(app, make_clinic, make_user):
    from sqlalchemy import func, select

    from portal.clinics.errors import SeatLimitReached
    from portal.clinics.invitations import accept_invitation
    from portal.clinics.models import Clinic, Membership, User
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_id = make_clinic("Clínica Concorrida", seats=2)
    make_user(clinic_id, role="admin", email="admin@c.example")
    tokens, users = [], []
    for number in range(10):
        email = f"medica{number}@c.example"
        _id, path = create_invitation(app, clinic_id, email, check_seats=False)
        tokens.append(path.rsplit("/", 1)[1])
        users.append(make_user(None, email=email))

    settings = app.config["PORTAL_SETTINGS"]
    start = threading.Barrier(10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def accept(token, user_id):
        with app.app_context():
            user = db.session.get(User, user_id)
            start.wait(timeout=30)
            try:
                accept_invitation(token, user=user, settings=settings)
                db.session.commit()
                outcome = "joined"
            except SeatLimitReached:
                db.session.rollback()
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

    threads = [
        threading.Thread(target=accept, args=(token, user_id))
        for token, user_id in zip(tokens, users, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["joined"] + ["refused"] * 9
    with app.app_context(), all_clinics():
        members = db.session.scalar(
            select(func.count()).select_from(Membership).where(Membership.clinic_id == clinic_id)
        )
        assert members == 2
        assert db.session.get(Clinic, clinic_id).seat_limit == 2
