"""Fixtures for tests of the web app: an app on a temporary database and a real S3 server."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import pytest

from portal.config import Settings
from portal.tenancy import all_clinics
from tests.support.databases import temporary_postgres_database_with_app_role
from tests.support.servers import run_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    with run_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path):
    """Return the app's and the migrations' database URLs as a pair.

    SQLite by default. Tests that need PostgreSQL parametrize this fixture indirectly
    with "postgresql". The app then connects as a role that owns no table, so row-level
    security applies to it, and migrations run as the owner.
    """
    if request.param == "postgresql":
        with temporary_postgres_database_with_app_role() as database:
            yield database.app_url, database.owner_url
    else:
        url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
        yield url, url


@pytest.fixture
def settings(tmp_path, s3_server, database_url) -> Settings:
    database_url, migration_url = database_url
    return Settings(
        secret_key="test-secret-key-" + "x" * 32,
        portal_base_url="http://127.0.0.1:8000",
        database_url=database_url,
        database_migration_url=migration_url,
        data_dir=str(tmp_path / "data"),
        huey_sqlite_path=str(tmp_path / "huey.sqlite3"),
        s3_bucket=s3_server.bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_public_endpoint_url=s3_server.endpoint_url,
        aws_region="us-east-1",
        aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key,
        max_upload_bytes=5 * 1024 * 1024,
    )


@pytest.fixture
def make_app(settings):
    """Return a factory that builds the app with the migrations applied."""
    from flask_migrate import upgrade

    from portal.app import create_app
    from portal.extensions import db

    built = []

    def build(**overrides):
        app = create_app(dataclasses.replace(settings, **overrides))
        app.config["TESTING"] = True
        app.config["WTF_CSRF_ENABLED"] = False
        with app.app_context():
            upgrade()
        built.append(app)
        return app

    yield build
    for app in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def queued(monkeypatch):
    """Record queued attempts instead of running them."""
    calls = []
    monkeypatch.setattr(
        "portal.studies.services.queue_attempt", lambda attempt: calls.append(attempt.id)
    )
    return calls


@pytest.fixture
def make_clinic(app):
    from portal.clinics.services import create_clinic
    from portal.extensions import db

    def make(name="Clínica A", seats=5):
        with app.app_context():
            clinic = create_clinic(name, seat_limit=seats)
            db.session.commit()
            return clinic.id

    return make


@pytest.fixture
def make_user(app):
    from portal.clinics.models import Identity, Membership, Role, User
    from portal.extensions import db

    def make(clinic_id, *, role="doctor", email="medica@example.com", subject=None, verified=True):
        with app.app_context(), all_clinics():
            user = User(email=email, display_name=email.split("@")[0], is_email_verified=verified)
            db.session.add(Identity(issuer="http://idp.test", subject=subject or email, user=user))
            if clinic_id is not None:
                db.session.add(Membership(user=user, clinic_id=clinic_id, role=Role(role)))
            db.session.commit()
            return user.id

    return make


@pytest.fixture
def login(app, client):
    """Sign a user in as the callback does: a server-side session and its token in the cookie."""
    from portal.auth.sessions import SESSION_TOKEN_KEY, start_session
    from portal.extensions import db

    def sign_in(user_id, *, test_client=None):
        target = test_client or client
        with app.app_context():
            token = start_session(user_id)
            db.session.commit()
        with target.session_transaction() as session:
            session["_user_id"] = str(user_id)
            session["_fresh"] = True
            session[SESSION_TOKEN_KEY] = token
        return target

    return sign_in


@pytest.fixture
def make_api_key(app):
    from portal.clinics.models import Clinic
    from portal.clinics.services import create_api_key
    from portal.extensions import db

    def make(clinic_id, name="RIS"):
        with app.app_context(), all_clinics():
            _key, token = create_api_key(db.session.get(Clinic, clinic_id), name=name)
            db.session.commit()
            return token

    return make


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def post_multipart(client, path, fields, headers=None):
    """POST a multipart body built in memory.

    Werkzeug's test client spools large bodies to a temporary file that stays open when
    the app answers without reading the body (as a 413 does), which fails the run.
    """
    from werkzeug.datastructures import MultiDict
    from werkzeug.test import encode_multipart

    boundary, body = encode_multipart(MultiDict(_flatten(fields)))
    return client.post(
        path,
        data=body,
        headers=headers or {},
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def _flatten(fields: dict):
    from werkzeug.datastructures import FileStorage

    for name, value in fields.items():
        if isinstance(value, tuple):
            stream, filename = value
            yield name, FileStorage(stream=stream, filename=filename, name=name)
        elif isinstance(value, list | tuple):
            for item in value:
                yield name, item
        else:
            yield name, value


def mark_succeeded(app, study_id, kinds) -> None:
    """Move a study's latest attempt to succeeded and give it artifacts of `kinds`.

    The storage keys are only recorded, not uploaded: presigning needs no object.
    """
    from portal.extensions import db
    from portal.studies.models import ARTIFACT_FILE_NAMES, Artifact, Study, StudyStatus

    with app.app_context(), all_clinics():
        attempt = db.session.get(Study, study_id).latest_attempt
        for status in (
            StudyStatus.CONVERTING,
            StudyStatus.INFERENCE_QUEUED,
            StudyStatus.INFERENCE_RUNNING,
            StudyStatus.WRITING_RESULTS,
            StudyStatus.SUCCEEDED,
        ):
            attempt.move_to(status)
        for kind in kinds:
            db.session.add(
                Artifact(
                    study_id=study_id,
                    attempt_id=attempt.id,
                    clinic_id=attempt.clinic_id,
                    kind=kind,
                    storage_key=f"clinics/x/studies/{study_id}/{ARTIFACT_FILE_NAMES[kind]}",
                )
            )
        db.session.commit()
