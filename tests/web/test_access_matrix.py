"""Every route of the app, as every kind of caller, against clinic A's resources.

The routes come from the app's URL map, so a route added without an entry in `MATRIX`
fails `test_every_route_has_an_entry`. Each entry gives the request and the status
each caller must get. Where another clinic's caller gets 404, the body must equal the
body of the same request for a resource that does not exist.

Callers: `anonymous`; `doctor_a`, `admin_a` (clinic A); `doctor_b`, `admin_b` (clinic
B); `removed_a` (a doctor removed from clinic A); `operator` (a platform operator with
no membership). JSON routes also get `api_key_a` (clinic A's API key) and `cookie_a`
(doctor A's page session without any Authorization header, which the API must ignore).
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass, field

import pytest

from tests.web.clinic_helpers import create_invitation
from tests.web.conftest import post_multipart, zip_bytes

WEB_CALLERS = ("anonymous", "doctor_a", "doctor_b", "admin_b", "removed_a", "operator", "admin_a")
API_CALLERS = (
    "anonymous",
    "cookie_a",
    "doctor_a",
    "doctor_b",
    "admin_b",
    "removed_a",
    "operator",
    "api_key_a",
    "admin_a",
)


@dataclass(frozen=True)
class Entry:
    """One route: how to call it and the status each caller gets.

    `path` and `json` may name resources of clinic A in braces: {study}, {membership},
    {invitation}, {token}, {clinic}, {target_user}, {webhook}. `form` is sent as a form
    body and `upload` adds a small ZIP as the multipart field `file`.
    """

    path: str
    expected: dict[str, int]
    form: dict | None = None
    json: dict | None = None
    upload: bool = False
    #: Callers whose 404 must be indistinguishable from a resource that does not exist.
    same_as_missing: tuple[str, ...] = field(default=())


def web(anonymous=302, a=200, b=200, admin_b=None, removed=302, operator=404, admin_a=None):
    """Build the expected statuses of a page route from the usual pattern."""
    return {
        "anonymous": anonymous,
        "doctor_a": a,
        "admin_a": a if admin_a is None else admin_a,
        "doctor_b": b,
        "admin_b": b if admin_b is None else admin_b,
        "removed_a": removed,
        "operator": operator,
    }


def api(anonymous=401, a=200, b=200, admin_b=None, removed=403, operator=404, key=None):
    """Build the expected statuses of a JSON route from the usual pattern."""
    return {
        "anonymous": anonymous,
        "cookie_a": anonymous,
        "doctor_a": a,
        "admin_a": a,
        "doctor_b": b,
        "admin_b": b if admin_b is None else admin_b,
        "removed_a": removed,
        "operator": operator,
        "api_key_a": a if key is None else key,
    }


def everyone(status, callers=WEB_CALLERS):
    return dict.fromkeys(callers, status)


OTHER_CLINIC = ("doctor_b", "admin_b")
NOT_MEMBERS = ("doctor_b", "admin_b", "operator")

MATRIX: dict[str, Entry] = {
    # Pages of the studies of the current clinic.
    "GET /": Entry("/", everyone(302)),
    "GET /studies/": Entry("/studies/", web()),
    "POST /studies/": Entry("/studies/", web(), form={"patient_id": "PID-NOT-STORED"}),
    "GET /studies/new": Entry("/studies/new", web()),
    "POST /studies/new": Entry(
        "/studies/new", web(a=302, b=302), form={"categories": ["lung"]}, upload=True
    ),
    "GET /studies/<study_id>": Entry("/studies/{study}", web(b=404), same_as_missing=NOT_MEMBERS),
    "GET /studies/<study_id>/status": Entry(
        "/studies/{study}/status", web(b=404), same_as_missing=NOT_MEMBERS
    ),
    "GET /studies/<study_id>/viewer": Entry(
        "/studies/{study}/viewer", web(a=302, b=404), same_as_missing=NOT_MEMBERS
    ),
    "GET /studies/<study_id>/viewer-data": Entry(
        "/studies/{study}/viewer-data", web(a=409, b=404), same_as_missing=NOT_MEMBERS
    ),
    # Study actions. The study is still queued, so it cannot run again; the first member
    # to cancel or delete it succeeds and later callers find it cancelled or gone.
    "POST /studies/<study_id>/cancel": Entry(
        "/studies/{study}/cancel", web(a=302, b=404, admin_a=409), same_as_missing=NOT_MEMBERS
    ),
    "POST /studies/<study_id>/rerun": Entry(
        "/studies/{study}/rerun", web(a=409, b=404), same_as_missing=NOT_MEMBERS
    ),
    "POST /studies/<study_id>/delete": Entry(
        "/studies/{study}/delete", web(a=302, b=404, admin_a=404), same_as_missing=NOT_MEMBERS
    ),
    # The clinic page and its admin actions.
    "GET /clinic/": Entry("/clinic/", web()),
    "POST /clinic/invitations": Entry(
        "/clinic/invitations",
        web(a=403, b=403, admin_b=302, admin_a=302),
        form={"email": "nova@example.com", "role": "doctor"},
    ),
    "POST /clinic/invitations/<invitation_id>/resend": Entry(
        "/clinic/invitations/{invitation}/resend",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/invitations/<invitation_id>/revoke": Entry(
        "/clinic/invitations/{invitation}/revoke",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    "GET /clinic/members/<membership_id>/remove": Entry(
        "/clinic/members/{membership}/remove",
        web(a=403, b=403, admin_b=404, admin_a=200),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/members/<membership_id>/remove": Entry(
        "/clinic/members/{membership}/remove",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/members/<membership_id>/role": Entry(
        "/clinic/members/{membership}/role",
        web(a=403, b=403, admin_b=404, admin_a=302),
        form={"role": "admin"},
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/switch": Entry(
        "/clinic/switch",
        web(a=302, b=404, removed=404, operator=404),
        form={"clinic_id": "{clinic}"},
        same_as_missing=NOT_MEMBERS + ("removed_a",),
    ),
    # The clinic's API keys: admins of the current clinic only.
    "GET /clinic/api-keys/": Entry(
        "/clinic/api-keys/", web(a=403, b=403, admin_a=200, admin_b=200)
    ),
    "POST /clinic/api-keys/": Entry(
        "/clinic/api-keys/",
        web(a=403, b=403, admin_a=201, admin_b=201),
        form={"name": "PACS router"},
    ),
    "POST /clinic/api-keys/<key_id>/revoke": Entry(
        "/clinic/api-keys/{api_key}/revoke",
        web(a=403, b=404, admin_a=302, admin_b=404),
        same_as_missing=NOT_MEMBERS,
    ),
    # The clinic's webhooks: admins of the current clinic only. The URL is the development
    # loopback address, allowed here, so that registering resolves no name.
    "GET /clinic/webhooks/": Entry(
        "/clinic/webhooks/", web(a=403, b=403, admin_a=200, admin_b=200)
    ),
    "POST /clinic/webhooks/": Entry(
        "/clinic/webhooks/",
        web(a=403, b=403, admin_a=201, admin_b=201),
        form={"url": "http://127.0.0.1:9/hook", "events": ["study.failed"]},
    ),
    "GET /clinic/webhooks/<endpoint_id>": Entry(
        "/clinic/webhooks/{webhook}",
        web(a=403, b=403, admin_b=404, admin_a=200),
        same_as_missing=("admin_b", "operator"),
    ),
    "GET /clinic/webhooks/<endpoint_id>/deliveries": Entry(
        "/clinic/webhooks/{webhook}/deliveries",
        web(a=403, b=403, admin_b=404, admin_a=200),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/webhooks/<endpoint_id>/disable": Entry(
        "/clinic/webhooks/{webhook}/disable",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/webhooks/<endpoint_id>/enable": Entry(
        "/clinic/webhooks/{webhook}/enable",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    "GET /clinic/webhooks/<endpoint_id>/delete": Entry(
        "/clinic/webhooks/{webhook}/delete",
        web(a=403, b=403, admin_b=404, admin_a=200),
        same_as_missing=("admin_b", "operator"),
    ),
    "POST /clinic/webhooks/<endpoint_id>/delete": Entry(
        "/clinic/webhooks/{webhook}/delete",
        web(a=403, b=403, admin_b=404, admin_a=302),
        same_as_missing=("admin_b", "operator"),
    ),
    # The audit trail: admins of the current clinic only, each seeing their own clinic's.
    "GET /clinic/audit/": Entry("/clinic/audit/", web(a=403, b=403, admin_a=200, admin_b=200)),
    "GET /clinic/audit/export.csv": Entry(
        "/clinic/audit/export.csv", web(a=403, b=403, admin_a=200, admin_b=200)
    ),
    # Patient data requests and legal holds: admins of the current clinic only.
    "GET /clinic/patient-data/": Entry(
        "/clinic/patient-data/", web(a=403, b=403, admin_a=200, admin_b=200)
    ),
    "POST /clinic/patient-data/": Entry(
        "/clinic/patient-data/",
        web(a=403, b=403, admin_a=200, admin_b=200),
        form={"patient_id": "PID-NOT-STORED"},
    ),
    "POST /clinic/patient-data/export": Entry(
        "/clinic/patient-data/export",
        web(a=403, b=403, admin_a=200, admin_b=200),
        form={"patient_id": "PID-NOT-STORED"},
    ),
    "POST /clinic/patient-data/erase": Entry(
        "/clinic/patient-data/erase",
        web(a=403, b=403, admin_a=200, admin_b=200),
        form={"patient_id": "PID-NOT-STORED", "confirm": "y"},
    ),
    "POST /studies/<study_id>/legal-hold": Entry(
        "/studies/{study}/legal-hold",
        web(a=403, b=403, admin_b=404, admin_a=302),
        form={"hold": "on"},
        same_as_missing=("admin_b", "operator"),
    ),
    "GET /privacy": Entry("/privacy", everyone(200)),
    # Invitation links: public page; acceptance needs the invited, verified e-mail.
    "GET /invitations/<token>": Entry("/invitations/{token}", everyone(200)),
    "POST /invitations/<token>/accept": Entry(
        "/invitations/{token}/accept", web(anonymous=302, a=403, b=403, removed=403, operator=403)
    ),
    # The operator's pages: absent for everyone else.
    "GET /operator/clinics/": Entry(
        "/operator/clinics/", web(a=404, b=404, removed=404, operator=200)
    ),
    "POST /operator/clinics/<clinic_id>/seats": Entry(
        "/operator/clinics/{clinic}/seats",
        web(a=404, b=404, removed=404, operator=302),
        form={"seats": "9"},
    ),
    # Sign-in pages. Tests configure no identity provider, so sign-in returns 503.
    "GET /auth/login": Entry("/auth/login", everyone(503)),
    "GET /auth/callback": Entry("/auth/callback?error=access_denied", everyone(503)),
    "POST /auth/logout": Entry("/auth/logout", everyone(302)),
    "GET /auth/signed-out": Entry("/auth/signed-out", everyone(200)),
    "GET /auth/no-clinic": Entry("/auth/no-clinic", everyone(403)),
    "POST /auth/locale": Entry("/auth/locale", everyone(302), form={"locale": "en"}),
    "GET /static/<path:filename>": Entry("/static/css/portal.css", everyone(200)),
    "GET /health/live": Entry("/health/live", everyone(200)),
    # The JSON API.
    "GET /api/health/": Entry("/api/health/", everyone(200, API_CALLERS)),
    "GET /api/auth/categories/": Entry("/api/auth/categories/", everyone(200, API_CALLERS)),
    "GET /api/schema/": Entry("/api/schema/", everyone(200, API_CALLERS)),
    "GET /api/schema/swagger/": Entry("/api/schema/swagger/", everyone(200, API_CALLERS)),
    "GET /api/schema/redoc/": Entry("/api/schema/redoc/", everyone(200, API_CALLERS)),
    "GET /api/auth/users/": Entry("/api/auth/users/", api()),
    "GET /api/auth/users/me/": Entry("/api/auth/users/me/", api()),
    "GET /api/clinics/clinics/": Entry("/api/clinics/clinics/", api()),
    "GET /api/clinics/clinics/doctors/": Entry("/api/clinics/clinics/doctors/", api()),
    "POST /api/clinics/clinics/invite/": Entry(
        "/api/clinics/clinics/invite/",
        api(a=403, b=403, admin_b=201, key=403) | {"admin_a": 201},
        json={"email": "nova@example.com", "role": "doctor"},
    ),
    "DELETE /api/clinics/clinics/remove_doctor/": Entry(
        "/api/clinics/clinics/remove_doctor/",
        api(a=403, b=403, admin_b=404, key=403) | {"admin_a": 200},
        json={"user_id": "{target_user}"},
        same_as_missing=("admin_b",),
    ),
    "GET /api/audit/events/": Entry(
        "/api/audit/events/", api(a=403, b=403, admin_b=200, key=403) | {"admin_a": 200}
    ),
    "POST /api/studies/": Entry("/api/studies/", api(a=202, b=202), upload=True),
    "GET /api/studies/": Entry("/api/studies/", api()),
    "GET /api/studies/<study_id>/report/": Entry(
        "/api/studies/{study}/report/", api(b=404), same_as_missing=OTHER_CLINIC + ("operator",)
    ),
    "GET /api/studies/<study_id>/": Entry(
        "/api/studies/{study}/", api(b=404), same_as_missing=OTHER_CLINIC + ("operator",)
    ),
    "GET /api/studies/<study_id>/status/": Entry(
        "/api/studies/{study}/status/", api(b=404), same_as_missing=OTHER_CLINIC + ("operator",)
    ),
    "GET /api/studies/<study_id>/result/": Entry(
        "/api/studies/{study}/result/",
        api(a=409, b=404),
        same_as_missing=OTHER_CLINIC + ("operator",),
    ),
    "POST /api/studies/<study_id>/cancel/": Entry(
        "/api/studies/{study}/cancel/",
        api(a=200, b=404, key=409) | {"admin_a": 409},
        json={},
        same_as_missing=OTHER_CLINIC + ("operator",),
    ),
    "POST /api/studies/<study_id>/rerun/": Entry(
        "/api/studies/{study}/rerun/",
        api(a=409, b=404),
        json={},
        same_as_missing=OTHER_CLINIC + ("operator",),
    ),
    "DELETE /api/studies/<study_id>/": Entry(
        "/api/studies/{study}/",
        api(a=204, b=404, key=404) | {"admin_a": 404},
        same_as_missing=OTHER_CLINIC + ("operator",),
    ),
    "GET /api/studies/<study_id>/attempts/": Entry(
        "/api/studies/{study}/attempts/", api(b=404), same_as_missing=OTHER_CLINIC + ("operator",)
    ),
    "GET /api/studies/<study_id>/visualization/": Entry(
        "/api/studies/{study}/visualization/",
        api(a=409, b=404),
        same_as_missing=OTHER_CLINIC + ("operator",),
    ),
}


def route_keys(app) -> set[str]:
    keys = set()
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            keys.add(f"{method} {rule.rule}")
    return keys


def test_every_route_has_an_entry(app):
    routes = route_keys(app)
    assert sorted(routes - set(MATRIX)) == [], "add these routes to MATRIX"
    assert sorted(set(MATRIX) - routes) == [], "these MATRIX entries match no route"


def test_every_entry_names_every_caller():
    for key, entry in MATRIX.items():
        callers = API_CALLERS if key.split(" ", 1)[1].startswith("/api/") else WEB_CALLERS
        assert set(entry.expected) == set(callers), key


@dataclass
class World:
    resources: dict[str, str]
    clients: dict
    headers: dict[str, dict]


@pytest.fixture
def world(app, make_clinic, make_user, make_api_key, login, queued, monkeypatch) -> World:
    """Build clinics A and B, their callers, and clinic A's study, member and invitation."""
    from portal.api.principal import USER_TOKEN_VERIFIER
    from portal.clinics.models import Membership, MembershipStatus, User
    from portal.extensions import db
    from portal.tenancy import all_clinics

    clinic_a, clinic_b = make_clinic("Clínica A", seats=10), make_clinic("Clínica B", seats=10)
    users = {
        "doctor_a": make_user(clinic_a, email="doctor.a@example.com"),
        "admin_a": make_user(clinic_a, role="admin", email="admin.a@example.com"),
        "doctor_b": make_user(clinic_b, email="doctor.b@example.com"),
        "admin_b": make_user(clinic_b, role="admin", email="admin.b@example.com"),
        "removed_a": make_user(clinic_a, email="removed.a@example.com"),
        "operator": make_user(None, email="operator@example.com"),
    }
    target_user = make_user(clinic_a, email="target.a@example.com")
    with app.app_context(), all_clinics():
        db.session.get(User, users["operator"]).is_operator = True
        removed = db.session.query(Membership).filter_by(user_id=users["removed_a"]).one()
        removed.status = MembershipStatus.REMOVED
        target = db.session.query(Membership).filter_by(user_id=target_user).one()
        target_membership = str(target.id)
        db.session.commit()

    api_key_a = make_api_key(clinic_a)
    uploader = app.test_client()
    study = post_multipart(
        uploader,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        {"Authorization": f"Bearer {api_key_a}"},
    ).get_json()["id"]
    invitation_id, link = create_invitation(app, clinic_a, "invited.a@example.com")
    webhook_id = create_webhook(app, clinic_a, monkeypatch)

    def verify(token: str):
        if not token.startswith("user:"):
            return None
        return db.session.get(User, uuid.UUID(token.removeprefix("user:")))

    app.extensions[USER_TOKEN_VERIFIER] = verify

    clients = {"anonymous": app.test_client()}
    headers = {
        "anonymous": {},
        "cookie_a": {},
        "api_key_a": {"Authorization": f"Bearer {api_key_a}"},
    }
    for name, user_id in users.items():
        clients[name] = login(user_id, test_client=app.test_client())
        headers[name] = {"Authorization": f"Bearer user:{user_id}"}
    clients["cookie_a"] = login(users["doctor_a"], test_client=app.test_client())
    clients["api_key_a"] = app.test_client()
    resources = {
        "study": study,
        "membership": target_membership,
        "invitation": str(invitation_id),
        "token": link.rsplit("/", 1)[1],
        "clinic": str(clinic_a),
        "target_user": str(target_user),
        "webhook": str(webhook_id),
        # The public part of the key: vzm_<key id>_<secret>.
        "api_key": api_key_a.removeprefix("vzm_").split("_", 1)[0],
    }
    return World(resources=resources, clients=clients, headers=headers)


def create_webhook(app, clinic_id, monkeypatch):
    """Allow webhooks to 127.0.0.1, register one for `clinic_id` and return its id.

    Delivery tasks are not queued, so enabling an endpoint sends nothing.
    """
    import dataclasses

    from portal.clinics.models import Clinic
    from portal.extensions import db
    from portal.tenancy import all_clinics
    from portal.webhooks.services import create_endpoint

    settings = dataclasses.replace(app.config["PORTAL_SETTINGS"], webhook_allow_loopback_http=True)
    monkeypatch.setitem(app.config, "PORTAL_SETTINGS", settings)
    monkeypatch.setattr("portal.tasks.queue_webhook_deliveries", lambda *args, **kwargs: None)
    with app.app_context(), all_clinics():
        endpoint, _secret = create_endpoint(
            db.session.get(Clinic, clinic_id),
            url="http://127.0.0.1:9/hook",
            events=["study.succeeded", "study.failed"],
            created_by=None,
            secret_key=settings.secret_key,
            allow_loopback_http=True,
        )
        db.session.commit()
        return endpoint.id


def fill(template, values: dict[str, str]):
    if isinstance(template, str):
        return template.format(**values) if "{" in template else template
    if isinstance(template, dict):
        return {name: fill(value, values) for name, value in template.items()}
    if isinstance(template, list):
        return [fill(value, values) for value in template]
    return template


def send(world: World, caller: str, method: str, entry: Entry, values: dict[str, str]):
    client = world.clients[caller]
    headers = dict(world.headers.get(caller, {})) if entry.path.startswith("/api/") else {}
    path = fill(entry.path, values)
    if entry.upload:
        fields = {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")}
        fields.update(fill(entry.form or {}, values))
        return post_multipart(client, path, fields, headers)
    if entry.json is not None:
        return client.open(path, method=method, json=fill(entry.json, values), headers=headers)
    if entry.form is not None:
        return client.open(path, method=method, data=fill(entry.form, values), headers=headers)
    return client.open(path, method=method, headers=headers)


CSRF_PATTERN = re.compile(r'(csrf-token" content=|name="csrf_token" value=)"[^"]*"')


def comparable_body(response, path: str):
    """Return the body without what names the request itself: its path and request id."""
    if response.is_json:
        body = response.get_json()
        return {name: value for name, value in body.items() if name != "request_id"}
    text = CSRF_PATTERN.sub(r"\1", response.get_data(as_text=True))
    return text.replace(path, "{path}")


def missing_resources(values: dict[str, str]) -> dict[str, str]:
    return {name: ("x" * 43 if name == "token" else str(uuid.uuid4())) for name in values}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("route", sorted(MATRIX))
def test_access(route, world):
    method, rule = route.split(" ", 1)
    entry = MATRIX[route]
    failures = []
    # admin_a comes last, because its changes (removal, revocation) succeed.
    for caller in API_CALLERS if rule.startswith("/api/") else WEB_CALLERS:
        expected = entry.expected[caller]
        response = send(world, caller, method, entry, world.resources)
        response.close()
        if response.status_code != expected:
            failures.append(f"{caller}: {response.status_code} (expected {expected})")
            continue
        if caller in entry.same_as_missing:
            assert expected == 404, f"{route}: {caller} compares bodies only for 404"
            absent = missing_resources(world.resources)
            missing = send(world, caller, method, entry, absent)
            missing.close()
            assert missing.status_code == 404, f"{route}: {caller} on a missing resource"
            own_body = comparable_body(response, fill(entry.path, world.resources))
            missing_body = comparable_body(missing, fill(entry.path, absent))
            assert own_body == missing_body, (
                f"{route}: {caller} sees a body that differs from a missing resource's"
            )
    assert failures == [], f"{route}: " + "; ".join(failures)
