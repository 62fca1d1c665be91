"""The admins' audit page, its CSV export and `GET /api/audit/events/`."""

from __future__ import annotations

import csv
import io
import re
import uuid

import pytest

from portal.audit import AuditActor, record
from portal.audit.models import ActorType
from portal.extensions import db
from tests.web.audit_helpers import EventWatch

postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def clinic_with_events(app, make_clinic, make_user):
    """Create a clinic with an admin, a doctor and seven events; return their ids."""
    clinic_id = make_clinic()
    admin_id = make_user(clinic_id, role="admin", email="chefe@example.com")
    doctor_id = make_user(clinic_id, email="medica@example.com")
    study_id = uuid.uuid4()
    other_study = uuid.uuid4()
    doctor = AuditActor(ActorType.USER, str(doctor_id), "doctor")
    with app.app_context():
        for _ in range(3):
            record(
                "study.viewed",
                target_type="study",
                target_id=study_id,
                clinic_id=clinic_id,
                actor=doctor,
            )
        record(
            "study.viewed",
            target_type="study",
            target_id=other_study,
            clinic_id=clinic_id,
            actor=doctor,
        )
        record(
            "study.deleted",
            target_type="study",
            target_id=other_study,
            clinic_id=clinic_id,
            actor=doctor,
        )
        record(
            "auth.sign_in",
            clinic_id=clinic_id,
            actor=AuditActor(ActorType.USER, str(admin_id), "admin"),
        )
        record("auth.sign_in", clinic_id=clinic_id, actor=doctor)
        db.session.commit()
    return {
        "clinic": clinic_id,
        "admin": admin_id,
        "doctor": doctor_id,
        "study": study_id,
        "other_study": other_study,
    }


def page_rows(response) -> list[str]:
    """Return the data-action of each table row of the audit page, in order."""
    return re.findall(r'data-action="([^"]+)"', response.get_data(as_text=True))


@pytest.fixture
def admin_token(app, clinic_with_events):
    """Let the bearer token "admin-token" stand for the clinic's admin on the API."""
    from portal.api.principal import USER_TOKEN_VERIFIER
    from portal.clinics.models import User

    admin_id = clinic_with_events["admin"]
    app.extensions[USER_TOKEN_VERIFIER] = lambda token: (
        db.session.get(User, admin_id) if token == "admin-token" else None
    )
    return {"Authorization": "Bearer admin-token"}


@both_databases
def test_page_lists_events_newest_first(app, client, login, clinic_with_events):
    login(clinic_with_events["admin"])

    response = client.get("/clinic/audit/", headers={"Accept-Language": "en"})

    assert response.status_code == 200
    assert page_rows(response) == [
        "auth.sign_in",
        "auth.sign_in",
        "study.deleted",
        "study.viewed",
        "study.viewed",
        "study.viewed",
        "study.viewed",
    ]
    page = response.get_data(as_text=True)
    assert "Study deleted" in page
    assert "medica" in page


def test_page_titles_in_portuguese(app, client, login, clinic_with_events):
    login(clinic_with_events["admin"])

    page = client.get("/clinic/audit/").get_data(as_text=True)

    assert "Trilha de auditoria" in page
    assert "Estudo excluído" in page


@pytest.mark.parametrize(
    ("filter_name", "key", "expected"),
    [
        ("person", "admin", ["auth.sign_in"]),
        ("action", None, ["study.deleted"]),
        ("study", "study", ["study.viewed"] * 3),
    ],
)
def test_page_filters(app, client, login, clinic_with_events, filter_name, key, expected):
    login(clinic_with_events["admin"])
    value = str(clinic_with_events[key]) if key else "study.deleted"

    response = client.get("/clinic/audit/", query_string={filter_name: value})

    assert response.status_code == 200
    assert page_rows(response) == expected


def test_page_period_filter(app, client, login, clinic_with_events):
    login(clinic_with_events["admin"])

    past = client.get("/clinic/audit/", query_string={"from": "2020-01-01", "to": "2020-01-31"})
    current = client.get("/clinic/audit/", query_string={"from": "2020-01-01"})

    assert page_rows(past) == []
    assert len(page_rows(current)) == 7


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"person": "ana"}, "person"),
        ({"study": "1234"}, "study"),
        ({"from": "31/01/2026"}, "from"),
        ({"action": "DROP TABLE"}, "action"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "to"),
        ({"before": "-3"}, "before"),
    ],
)
def test_page_rejects_invalid_filters(app, client, login, clinic_with_events, args, name):
    login(clinic_with_events["admin"])

    response = client.get("/clinic/audit/", query_string=args, headers={"Accept-Language": "en"})

    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert 'id="filter-error"' in text
    assert f"The filter {name} is invalid" in text
    # The form stays, so the admin can correct the filter in place.
    assert 'class="audit-filters"' in text


def test_page_pages_by_sequence(app, client, login, clinic_with_events):
    login(clinic_with_events["admin"])

    first = client.get("/clinic/audit/?limit=3")
    older = re.search(r'href="([^"]*before=\d+[^"]*)"', first.get_data(as_text=True))
    second = client.get(older.group(1).replace("&amp;", "&"))

    assert page_rows(first) == ["auth.sign_in", "auth.sign_in", "study.deleted"]
    assert page_rows(second) == ["study.viewed"] * 3
    assert "before=5" in older.group(1)


def test_doctor_cannot_open_audit_page(app, client, login, clinic_with_events):
    login(clinic_with_events["doctor"])

    assert client.get("/clinic/audit/").status_code == 403
    assert client.get("/clinic/audit/export.csv").status_code == 403


@both_databases
def test_page_shows_only_own_clinic(app, client, login, make_clinic, make_user, clinic_with_events):
    other_clinic = make_clinic("B")
    other_admin = make_user(other_clinic, role="admin", email="b@example.com")
    login(other_admin)

    response = client.get("/clinic/audit/")

    assert response.status_code == 200
    assert page_rows(response) == []
    study = client.get("/clinic/audit/", query_string={"study": str(clinic_with_events["study"])})
    assert page_rows(study) == []


def test_csv_export_is_recorded_and_filtered(app, client, login, clinic_with_events):
    clinic_id = clinic_with_events["clinic"]
    login(clinic_with_events["admin"])
    watch = EventWatch(app, clinic_id)

    response = client.get(
        "/clinic/audit/export.csv", query_string={"study": str(clinic_with_events["other_study"])}
    )

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["action"] for row in rows] == ["study.deleted", "study.viewed"]
    assert rows[0]["actor_name"] == "medica"
    assert rows[0]["target_id"] == str(clinic_with_events["other_study"])
    assert len(rows[0]["hash"]) == 64
    exported = watch.new_events()
    assert [event.action for event in exported] == ["audit.exported"]
    assert exported[0].actor_id == str(clinic_with_events["admin"])
    assert exported[0].details == {
        "format": "csv",
        "study": str(clinic_with_events["other_study"]),
    }


def test_csv_neutralises_formulas(app, client, login, clinic_with_events):
    login(clinic_with_events["admin"])

    response = client.get("/clinic/audit/export.csv", headers={"User-Agent": "=HYPERLINK(1)"})
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))

    assert rows[0]["action"] == "audit.exported"
    assert rows[0]["user_agent"] == "'=HYPERLINK(1)"


def test_csv_names_system_actor(app, client, login, clinic_with_events):
    with app.app_context():
        record("study.viewed", clinic_id=clinic_with_events["clinic"])
        db.session.commit()
    login(clinic_with_events["admin"])

    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get("/clinic/audit/export.csv", headers={"Accept-Language": "en"}).get_data(
                    as_text=True
                )
            )
        )
    )

    assert rows[1]["action"] == "study.viewed"
    assert rows[1]["actor_type"] == "system"
    assert rows[1]["actor_name"] == "System"


@both_databases
def test_api_lists_events_with_cursor(app, client, clinic_with_events, admin_token):
    first = client.get("/api/audit/events/?limit=4", headers=admin_token)

    assert first.status_code == 200
    body = first.get_json()
    assert [event["seq"] for event in body["events"]] == [7, 6, 5, 4]
    assert body["next_cursor"] == "4"
    second = client.get(body["links"]["next"], headers=admin_token).get_json()
    assert [event["seq"] for event in second["events"]] == [3, 2, 1]
    assert second["next_cursor"] is None
    event = body["events"][0]
    assert event["action"] == "auth.sign_in"
    assert event["actor"] == {
        "type": "user",
        "id": str(clinic_with_events["doctor"]),
        "role": "doctor",
    }
    assert len(event["hash"]) == 64


def test_api_filters_like_page(app, client, clinic_with_events, admin_token):
    person = client.get(
        "/api/audit/events/",
        query_string={"person": str(clinic_with_events["admin"])},
        headers=admin_token,
    ).get_json()
    study = client.get(
        "/api/audit/events/",
        query_string={"study": str(clinic_with_events["study"]), "action": "study.viewed"},
        headers=admin_token,
    ).get_json()

    assert [event["action"] for event in person["events"]] == ["auth.sign_in"]
    assert len(study["events"]) == 3
    assert {event["target"]["id"] for event in study["events"]} == {
        str(clinic_with_events["study"])
    }


@pytest.mark.parametrize(
    ("query", "name"), [("limit=0", "limit"), ("limit=500", "limit"), ("cursor=x", "cursor")]
)
def test_api_rejects_invalid_paging(app, client, clinic_with_events, admin_token, query, name):
    response = client.get(
        f"/api/audit/events/?{query}", headers=admin_token | {"Accept-Language": "en"}
    )

    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_filter"
    assert f"The filter {name} is invalid" in response.get_json()["detail"]
    (error,) = response.get_json()["errors"]
    assert (error["field"], error["location"], error["code"]) == (name, "query", "invalid_value")


def test_api_key_cannot_list_events(app, client, clinic_with_events, make_api_key):
    token = make_api_key(clinic_with_events["clinic"])

    response = client.get("/api/audit/events/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 403
    assert response.get_json()["code"] == "admin_required"
