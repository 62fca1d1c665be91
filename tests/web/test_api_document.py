"""The OpenAPI document, the request validation it describes, and translated problems."""

from __future__ import annotations

import io

import pytest

from tests.web.conftest import post_multipart
from tests.web.test_api_studies import SMALL_ZIP, auth, upload

#: Routes under /api/ that serve the document itself, so they are not operations in it.
DOCUMENTATION_ROUTES = {"/api/schema/", "/api/schema/swagger/", "/api/schema/redoc/"}
PUBLIC_OPERATIONS = {("get", "/api/health/"), ("get", "/api/auth/categories/")}


def openapi_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}")


@pytest.fixture
def document(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    return response.get_json()


def operations(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_document_is_openapi_31(document):
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"]
    assert "servers" not in document


def test_every_api_route_is_documented(app, document):
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule in DOCUMENTATION_ROUTES:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operations_of_path = document["paths"].get(openapi_path(rule.rule), {})
            if method.lower() not in operations_of_path:
                missing.append(f"{method} {rule.rule}")
    assert missing == []


def test_document_lists_no_route_that_does_not_exist(app, document):
    routes = {openapi_path(rule.rule) for rule in app.url_map.iter_rules()}
    assert set(document["paths"]) - routes == set()


def test_paths_are_absolute_from_site_root(document):
    for path in document["paths"]:
        assert path.startswith("/api/"), path


def test_security_schemes_are_bearer(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"]["type"] == "http"
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert schemes["CognitoAccessToken"]["scheme"] == "bearer"
    assert schemes["CognitoAccessToken"]["bearerFormat"] == "JWT"


def test_every_operation_declares_security(document):
    for method, path, operation in operations(document):
        assert "security" in operation, (method, path)
        if (method, path) in PUBLIC_OPERATIONS:
            assert operation["security"] == [], (method, path)
        else:
            assert operation["security"] == [{"ApiKey": []}, {"CognitoAccessToken": []}], (
                method,
                path,
            )


def test_every_operation_has_a_summary(document):
    for method, path, operation in operations(document):
        summary = operation.get("summary", "")
        assert summary and not summary.startswith(("get_", "post_", "delete_")), (method, path)


def test_every_schema_field_has_a_description(document):
    undescribed = []
    for name, schema in document["components"]["schemas"].items():
        for field_name, field_schema in schema.get("properties", {}).items():
            if not field_schema.get("description"):
                undescribed.append(f"{name}.{field_name}")
    assert undescribed == []


def test_every_parameter_has_a_description(document):
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])


def test_upload_operation_has_a_complete_example(document):
    upload_operation = document["paths"]["/api/studies/"]["post"]
    body_schema_name = upload_operation["requestBody"]["content"]["multipart/form-data"]["schema"][
        "$ref"
    ].rsplit("/", 1)[1]
    body_schema = document["components"]["schemas"][body_schema_name]
    body_example = body_schema["examples"][0]
    # Complete: the example sets every field the upload accepts.
    assert set(body_example) == set(body_schema["properties"])
    assert {"file", "categories", "legal_basis"} <= set(body_example)
    header = next(p for p in upload_operation["parameters"] if p["name"] == "Idempotency-Key")
    assert header["schema"]["examples"]
    answer = upload_operation["responses"]["202"]["content"]["application/json"]["schema"]
    answer_example = document["components"]["schemas"][answer["$ref"].rsplit("/", 1)[1]][
        "examples"
    ][0]
    assert answer_example["status"] == "uploaded"
    assert answer_example["links"]["status"].endswith("/status/")


def test_errors_are_documented_as_problem_json(document):
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith("4"):
                assert list(response["content"]) == ["application/problem+json"], (
                    method,
                    path,
                    status,
                )


def test_unknown_query_parameter_is_rejected(client, make_clinic, make_api_key):
    token = make_api_key(make_clinic())
    response = client.get("/api/studies/?limt=5", headers=auth(token))
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert body["errors"] == [
        {
            "field": "limt",
            "location": "query",
            "code": "unknown_field",
            "message": body["errors"][0]["message"],
        }
    ]


def test_unknown_form_field_is_rejected(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    response = upload(client, token, patient_name="SILVA^MARIA")
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["field"] == "patient_name"
    assert body["errors"][0]["location"] == "form"
    assert body["errors"][0]["code"] == "unknown_field"
    # The rejected value never comes back in the problem.
    assert "SILVA" not in response.get_data(as_text=True)
    assert queued == []


def test_unknown_json_field_is_rejected(app, client, make_clinic, make_api_key, queued):
    from uuid import UUID

    from portal.extensions import db
    from portal.studies.models import Study

    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    with app.app_context():
        db.session.get(Study, UUID(study_id)).latest_attempt.fail("no_dicom_found")
        db.session.commit()
    response = client.post(
        f"/api/studies/{study_id}/rerun/",
        json={"series_id": "s1", "series": "s2"},
        headers=auth(token),
    )
    assert response.status_code == 400
    body = response.get_json()
    assert [(e["field"], e["location"], e["code"]) for e in body["errors"]] == [
        ("series", "body", "unknown_field")
    ]
    assert queued == [queued[0]]


def test_cancel_refuses_a_body_with_fields(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    path = f"/api/studies/{study_id}/cancel/"

    rejected = client.post(path, json={"series_id": "nope"}, headers=auth(token))
    not_json = client.post(path, data="cancel", content_type="text/plain", headers=auth(token))

    assert rejected.status_code == 400
    assert [(e["field"], e["code"]) for e in rejected.get_json()["errors"]] == [
        ("series_id", "unknown_field")
    ]
    assert not_json.status_code == 400
    assert client.post(path, json={}, headers=auth(token)).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{series_id", "application/json"),
        ("[]", "application/json"),
        ("null", "application/json"),
        ('{"series_id": "s1"}', "text/plain"),
    ],
)
def test_body_that_is_not_json_object_is_rejected(
    client, make_clinic, make_api_key, queued, body, content_type
):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    response = client.post(
        f"/api/studies/{study_id}/rerun/",
        data=body,
        content_type=content_type,
        headers=auth(token),
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_body"


def test_missing_file_is_rejected(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    response = post_multipart(client, "/api/studies/", {"categories": ["lung"]}, auth(token))
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["field"] == "file"
    assert body["errors"][0]["code"] == "missing"


@pytest.mark.parametrize(
    ("accept_language", "title", "field_message"),
    [
        (None, "Requisição inválida", "Campo desconhecido"),
        ("pt-BR", "Requisição inválida", "Campo desconhecido"),
        ("en", "Invalid request", "Unknown field"),
        ("en-US,en;q=0.9", "Invalid request", "Unknown field"),
    ],
)
def test_validation_problem_follows_accept_language(
    client, make_clinic, make_api_key, accept_language, title, field_message
):
    token = make_api_key(make_clinic())
    headers = auth(token)
    if accept_language:
        headers["Accept-Language"] = accept_language
    body = client.get("/api/studies/?unknown=1", headers=headers).get_json()
    assert body["title"] == title
    assert body["errors"][0]["message"].startswith(field_message)
    assert body["type"] == "/api/problems/validation_failed"
    assert body["status"] == 400


def test_conflict_detail_follows_accept_language(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    path = f"/api/studies/{study_id}/result/"
    english = client.get(path, headers=auth(token) | {"Accept-Language": "en"}).get_json()
    portuguese = client.get(path, headers=auth(token)).get_json()
    assert english["code"] == portuguese["code"] == "study_not_succeeded"
    assert english["title"] == "No result yet"
    assert english["detail"].startswith("The study has no successful result yet")
    assert portuguese["title"] != english["title"]
    assert portuguese["detail"] != english["detail"]


def test_report_endpoint_before_conversion(client, make_clinic, make_api_key, queued):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    response = client.get(f"/api/studies/{study_id}/report/", headers=auth(token))
    assert response.status_code == 200
    assert response.get_json() == {"id": study_id, "attempt": 1, "report": None}


def test_report_endpoint_translates_reasons(app, client, make_clinic, make_api_key, queued):
    from uuid import UUID

    from portal.extensions import db
    from portal.studies.models import Study

    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]
    with app.app_context():
        attempt = db.session.get(Study, UUID(study_id)).latest_attempt
        attempt.report = {
            "series": [
                {
                    "series_id": "s1",
                    "modality": "CT",
                    "slices": 40,
                    "chosen": True,
                    "reason_code": "chosen_most_slices",
                },
                {
                    "series_id": "s2",
                    "modality": "OT",
                    "slices": 1,
                    "chosen": False,
                    "reason_code": "localizer",
                },
            ],
            "chosen_series_id": "s1",
            "warnings": [{"code": "duplicate_slice", "member_index": 3, "params": {}}],
        }
        db.session.commit()
    body = client.get(
        f"/api/studies/{study_id}/report/", headers=auth(token) | {"Accept-Language": "en"}
    ).get_json()
    report = body["report"]
    assert report["chosen_series_id"] == "s1"
    assert [series["chosen"] for series in report["series"]] == [True, False]
    assert report["series"][1]["reason"].startswith("Localizer")
    assert report["warnings"][0]["member_index"] == 3


def test_documentation_pages_use_vendored_assets(client):
    for path, asset in (
        ("/api/schema/swagger/", "/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        ("/api/schema/redoc/", "/static/js/api-docs-redoc.js"),
    ):
        response = client.get(path)
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        assert asset in page
        assert 'data-document-url="/api/schema/"' in page
        assert "https://" not in page
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy
        assert "http" not in policy
        with client.get(asset) as asset_response:
            assert asset_response.status_code == 200


def test_upload_form_example_file_uploads(client, make_clinic, make_api_key, queued):
    """The documented multipart shape (file plus repeated categories) is what the API takes."""
    token = make_api_key(make_clinic())
    fields = {"file": (io.BytesIO(SMALL_ZIP), "study.zip"), "categories": ["lung", "bone"]}
    response = post_multipart(client, "/api/studies/", fields, auth(token))
    assert response.status_code == 202
    assert response.get_json()["categories"] == ["lung", "bone"]


def test_clinic_header_is_documented_where_authenticated(document):
    for method, path, operation in operations(document):
        names = [parameter["name"] for parameter in operation.get("parameters", [])]
        if (method, path) in PUBLIC_OPERATIONS:
            assert "X-Clinic-ID" not in names, (method, path)
        else:
            assert "X-Clinic-ID" in names, (method, path)


def test_response_off_schema_is_internal_error(
    client, make_clinic, make_api_key, queued, monkeypatch
):
    token = make_api_key(make_clinic())
    study_id = upload(client, token).get_json()["id"]

    def broken_status_json(study):
        return {"id": str(study.id), "status": "SILVA^MARIA"}

    monkeypatch.setattr("portal.api.views.status_json", broken_status_json)
    response = client.get(f"/api/studies/{study_id}/status/", headers=auth(token))
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "internal_error"
    assert "SILVA" not in response.get_data(as_text=True)
