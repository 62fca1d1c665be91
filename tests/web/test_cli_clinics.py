"""The operator's commands: clinics create, set-seats and list."""

from __future__ import annotations

import uuid

import pytest

from tests.web.clinic_helpers import invitation_link, outbox_messages, text_body


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_create_with_admin_email_sends_admin_invitation(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "clinics",
            "create",
            "Clínica Nova",
            "--seats",
            "4",
            "--admin-email",
            "Chefe@Nova.example",
        ]
    )
    assert result.exit_code == 0, result.output
    clinic_id = uuid.UUID(result.output.strip())
    message = outbox_messages(app)[-1]
    assert message["To"] == "chefe@nova.example"
    assert "como Administrador" in text_body(message)
    assert invitation_link(message).startswith("http://127.0.0.1:8000/invitations/")

    listing = runner.invoke(args=["clinics", "list"])
    assert listing.exit_code == 0, listing.output
    assert listing.output.splitlines() == [f"{clinic_id}\t1\t4\tClínica Nova"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_set_seats_changes_limit(app):
    runner = app.test_cli_runner()
    clinic_id = runner.invoke(args=["clinics", "create", "Clínica", "--seats", "2"]).output.strip()
    result = runner.invoke(args=["clinics", "set-seats", clinic_id, "7"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["clinics", "list"]).output.split("\t")[2] == "7"


def test_set_seats_rejects_unknown_clinic_and_zero(app):
    runner = app.test_cli_runner()
    unknown = runner.invoke(args=["clinics", "set-seats", str(uuid.uuid4()), "3"])
    assert unknown.exit_code != 0
    assert "not found" in unknown.output
    clinic_id = runner.invoke(args=["clinics", "create", "Clínica", "--seats", "2"]).output.strip()
    zero = runner.invoke(args=["clinics", "set-seats", clinic_id, "0"])
    assert zero.exit_code != 0


def test_create_with_bad_admin_email_creates_nothing(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["clinics", "create", "Clínica", "--seats", "2", "--admin-email", "not-an-email"]
    )
    assert result.exit_code != 0
    assert "clinic not created" in result.output
    assert runner.invoke(args=["clinics", "list"]).output == ""


def test_operator_flag_is_granted_and_revoked(app, make_user):
    from portal.clinics.models import User
    from portal.extensions import db

    user_id = make_user(None, email="ops@vizier.example")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["operators", "grant", "OPS@vizier.example"]).exit_code == 0
    with app.app_context():
        assert db.session.get(User, user_id).is_operator is True
    assert runner.invoke(args=["operators", "revoke", "ops@vizier.example"]).exit_code == 0
    with app.app_context():
        assert db.session.get(User, user_id).is_operator is False
    unknown = runner.invoke(args=["operators", "grant", "nobody@vizier.example"])
    assert unknown.exit_code != 0
    assert "sign in to the portal once first" in unknown.output
