"""Property-based run of schemathesis against the API's own OpenAPI document.

Two clinics, each with an API key and studies in several states, plus clinic A's admin
with an access token. For every operation, schemathesis generates a bounded number of
valid and invalid requests and sends them to the Flask app as a WSGI app. The run checks
that no response is a 5xx and that every status code, content type and body conforms to
the document.
"""

from __future__ import annotations

import io
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import post_multipart, zip_bytes

#: Generated requests per operation and generation mode (valid and invalid). With 17
#: operations this is about 700 requests, which took about a minute on 2 cores.
EXAMPLES_PER_OPERATION = 20

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def seed_study(app, token: str, status: str | None) -> str:
    """Upload a small ZIP with `token` and move its attempt to `status` by hand."""
    from portal.extensions import db
    from portal.studies.models import Artifact, ArtifactKind, Study, StudyStatus
    from portal.tenancy import all_clinics

    fields = {"file": (io.BytesIO(zip_bytes({"IM0001": uuid.uuid4().bytes})), "s.zip")}
    response = post_multipart(
        app.test_client(), "/api/studies/", fields, {"Authorization": f"Bearer {token}"}
    )
    study_id = response.get_json()["id"]
    if status is None:
        return study_id
    with app.app_context(), all_clinics():
        study = db.session.get(Study, uuid.UUID(study_id))
        attempt = study.latest_attempt
        attempt.status = StudyStatus(status)
        if status == StudyStatus.SUCCEEDED:
            attempt.label_stats = [{"value": 1, "voxel_count": 10, "volume_ml": 0.5}]
            for kind in (ArtifactKind.IMAGE_NIFTI, ArtifactKind.MASK_NIFTI):
                study.artifacts.append(
                    Artifact(
                        clinic_id=study.clinic_id,
                        attempt=attempt,
                        kind=kind,
                        storage_key=f"clinics/{study.clinic_id}/studies/{study.id}/{kind}",
                    )
                )
        if status == StudyStatus.FAILED:
            attempt.error_code = "no_dicom_found"
            attempt.error_detail = {}
        db.session.commit()
    return study_id


@pytest.fixture
def seeded(make_app, make_clinic, make_api_key, make_user, queued):
    """Build the app without rate limits and seed two clinics; return app, callers, studies."""
    from portal.api.principal import USER_TOKEN_VERIFIER
    from portal.clinics.models import User
    from portal.extensions import db

    app = make_app(rate_limit_enabled=False)
    clinic_a, clinic_b = make_clinic("Clínica A", seats=50), make_clinic("Clínica B", seats=50)
    key_a, key_b = make_api_key(clinic_a), make_api_key(clinic_b)
    admin_a = make_user(clinic_a, role="admin", email="admin.a@example.com")
    make_user(clinic_a, email="doctor.a@example.com")

    def verify(token: str):
        if not token.startswith("user:"):
            return None
        return db.session.get(User, uuid.UUID(token.removeprefix("user:")))

    app.extensions[USER_TOKEN_VERIFIER] = verify
    studies = [
        seed_study(app, key, status)
        for key in (key_a, key_b)
        for status in (None, "converting", "succeeded", "failed", "cancelled")
    ]
    callers = [
        {"Authorization": f"Bearer {key_a}"},
        {"Authorization": f"Bearer {key_b}"},
        {"Authorization": f"Bearer user:{admin_a}"},
    ]
    return app, callers, studies


def test_api_conforms_to_its_document(seeded):
    app, callers, studies = seeded
    schema = schemathesis.openapi.from_wsgi("/api/schema/", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    # Deletions run last, so the other operations meet the seeded studies still there.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=operation.as_strategy(generation_mode=mode), caller=st.sampled_from(callers)
            )
            def check_operation(case, caller):
                study_id = (case.path_parameters or {}).get("study_id")
                # Mostly real studies of both clinics, sometimes a generated id.
                if isinstance(study_id, str) and len(study_id) % 4 != 3:
                    case.path_parameters["study_id"] = studies[len(study_id) % len(studies)]
                case.call_and_validate(headers=caller, checks=CHECKS)

            try:
                check_operation()
            except Unsatisfiable:
                # An operation whose only input is a string path parameter (or none at
                # all) has no invalid request to generate.
                assert mode == GenerationMode.NEGATIVE, operation.label
