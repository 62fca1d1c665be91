"""The OpenAPI 3.1 document of the JSON API, built by SpecTree from the pydantic schemas.

`api_spec.validate(...)` on a view validates its query, body, form and headers against
pydantic models and its response against the declared model, and adds the operation to
the document. An invalid request becomes a `validation_failed` problem with one entry per
field, translated like every other API error.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from flask_babel import lazy_gettext as _l
from pydantic import ValidationError
from spectree import Response, SpecTree

from portal.api.principal import CLINIC_HEADER
from portal.api.schemas import Problem
from portal.errors import UserFacingError

logger = logging.getLogger(__name__)

#: Path prefix of the document and its viewers; SpecTree leaves routes under it out of the
#: document it builds.
DOCUMENT_PATH = "api/schema"

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"

#: Security requirement of every operation that needs a credential: either scheme works.
AUTHENTICATED = [{"ApiKey": []}, {"CognitoAccessToken": []}]
#: Security requirement of public operations.
PUBLIC: dict = {}

#: The optional header a user's access token names its clinic with; API keys ignore it.
CLINIC_HEADER_PARAMETER = {
    "name": CLINIC_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "format": "uuid"},
    "description": "For an access token of a member of several clinics: the id of the "
    "clinic the request acts in. Required for such a user, ignored for an API key.",
}

#: Errors any authenticated operation may return. 400 is an invalid request or a missing
#: X-Clinic-ID, 401 a missing or invalid credential, 403 a user with no active membership,
#: and 404 an X-Clinic-ID that is not the caller's. 429 is past the rate limit, and 503
#: means the identity provider's signing keys could not be fetched.
AUTHENTICATED_ERRORS = (400, 401, 403, 404, 429, 503)

SECURITY_SCHEMES = [
    {
        "name": "ApiKey",
        "data": {
            "type": "http",
            "scheme": "bearer",
            "description": "A clinic API key (`vzm_...`), created by a clinic admin on the "
            "API keys page. It acts with a doctor's rights in its clinic.",
        },
    },
    {
        "name": "CognitoAccessToken",
        "data": {
            "type": "http",
            "scheme": "bearer",
            "bearer_format": "JWT",
            "description": "An access token of the portal's Cognito user pool, for a user who "
            "is an active member of a clinic. A member of several clinics names one in the "
            "`X-Clinic-ID` header.",
        },
    },
]


class ValidationFailed(UserFacingError):
    code = "validation_failed"
    status = 400
    title = _l("Invalid request")
    message = _l("Some fields are invalid. Fix the fields listed in 'errors' and try again.")

    def __init__(self, errors: list[dict]):
        super().__init__()
        self.errors = errors

    def problem_fields(self) -> dict:
        return {"errors": self.errors}


class InvalidJsonBody(UserFacingError):
    code = "invalid_body"
    status = 400
    title = _l("Invalid request body")
    message = _l(
        "The body is not valid JSON. Send a JSON object with 'Content-Type: application/json', "
        "or no body where it is optional."
    )


#: Field error codes by pydantic error type, with their translated message.
FIELD_ERRORS: dict[str, tuple[str, Any]] = {
    "extra_forbidden": (
        "unknown_field",
        _l("Unknown field. Remove it or check its spelling against the API documentation."),
    ),
    "missing": ("missing", _l("This field is required.")),
    "greater_than_equal": ("too_small", _l("The value must be at least %(limit)s.")),
    "greater_than": ("too_small", _l("The value must be greater than %(limit)s.")),
    "less_than_equal": ("too_large", _l("The value must be at most %(limit)s.")),
    "less_than": ("too_large", _l("The value must be less than %(limit)s.")),
    "string_too_short": ("too_small", _l("The text must have at least %(limit)s characters.")),
    "string_too_long": ("too_long", _l("The text must have at most %(limit)s characters.")),
    "too_short": ("too_small", _l("The list must have at least %(limit)s items.")),
    "too_long": ("too_long", _l("The list must have at most %(limit)s items.")),
    "enum": ("invalid_choice", _l("Choose one of: %(choices)s.")),
    "literal_error": ("invalid_choice", _l("Choose one of: %(choices)s.")),
    "timezone_aware": (
        "invalid_value",
        _l("Give the time with a UTC offset, for example 2026-03-02T14:05:00-03:00."),
    ),
    "string_pattern_mismatch": ("invalid_value", _l("The value has characters not allowed here.")),
}
INVALID_TYPE_MESSAGE = _l("The value has the wrong type or format for this field.")
INVALID_VALUE_MESSAGE = _l("Invalid value.")

#: Request part each model validates, by the suffix of the model's class name.
LOCATION_BY_SUFFIX = {"Query": "query", "Headers": "header", "Upload": "form"}


def _limit_of(context: dict) -> Any:
    for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
        if name in context:
            return context[name]
    return ""


def field_errors(error: ValidationError, *, location: str) -> list[dict]:
    """Describe each error of a pydantic validation as a translated, stable field error."""
    described = []
    for item in error.errors(include_url=False, include_input=False):
        context = item.get("ctx") or {}
        kind = item["type"]
        if kind in FIELD_ERRORS:
            code, template = FIELD_ERRORS[kind]
            message = str(template) % {
                "limit": _limit_of(context),
                # pydantic lists the choices in English: "'a', 'b' or 'c'".
                "choices": str(context.get("expected", "")).replace(" or ", ", "),
            }
        elif kind.endswith(("_type", "_parsing")):
            code, message = "invalid_type", str(INVALID_TYPE_MESSAGE)
        else:
            code, message = "invalid_value", str(INVALID_VALUE_MESSAGE)
        described.append(
            {
                "field": ".".join(str(part) for part in item["loc"]) or "body",
                "location": location,
                "code": code,
                "message": message,
            }
        )
    return described


def _location_of(error: ValidationError) -> str:
    for suffix, location in LOCATION_BY_SUFFIX.items():
        if error.title.endswith(suffix):
            return location
    return "body"


def raise_validation_problem(req, _response, validation_error, _instance, _adapter) -> None:
    """Turn SpecTree's request validation error into a `validation_failed` problem.

    SpecTree reads a JSON body that does not parse, is not sent as `application/json`,
    or is an empty array as `{}`. Such a body, and any body that is not a JSON object,
    is rejected here as `invalid_body` before its fields are validated.
    """
    location = _location_of(validation_error) if validation_error is not None else None
    validated_json = getattr(getattr(req, "context", None), "json", None) is not None
    if (location == "body" or validated_json) and _body_is_not_json_object(req):
        raise InvalidJsonBody()
    if validation_error is None:
        return
    errors = field_errors(validation_error, location=location)
    logger.info("API request to %s rejected: %d invalid %s fields", req.path, len(errors), location)
    raise ValidationFailed(errors)


def _body_is_not_json_object(req) -> bool:
    return bool(req.content_length) and not isinstance(req.get_json(silent=True), dict)


class ResponseContractError(RuntimeError):
    """A view's response body does not match the model its operation declares."""


def raise_response_mismatch(req, _response, validation_error, _instance, _adapter) -> None:
    """Turn a response that breaks the document into a logged 500 `internal_error`.

    SpecTree would otherwise send pydantic's error list, which may quote values from
    the body, as the 500 response. Only the paths of the wrong fields are kept.
    """
    if validation_error is None:
        return
    fields = [
        ".".join(str(part) for part in item["loc"])
        for item in validation_error.errors(include_url=False, include_input=False)
    ]
    raise ResponseContractError(
        f"response of {req.method} {req.path} does not match its schema at {fields}"
    )


api_spec = SpecTree(
    "flask",
    mode="strict",
    path=DOCUMENT_PATH,
    page_templates={},
    title="Vizier Med portal API",
    version="1.0.0",
    description=(
        "Upload DICOM studies as ZIP files, follow their processing and download the "
        "segmentation. Errors are `application/problem+json` with a stable `code`; `title` "
        "and `detail` follow `Accept-Language` (Brazilian Portuguese by default, English "
        "with `en`). A study of another clinic returns 404."
    ),
    security_schemes=SECURITY_SCHEMES,
    before=raise_validation_problem,
    after=raise_response_mismatch,
    validation_error_status=400,
    validation_error_model=Problem,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)


def responses(*plain_codes: int, errors: tuple[int, ...] = (), **models) -> Response:
    """Declare an operation's responses: `HTTP_200=Model`, body-less codes and error codes.

    Every error code returns a `Problem`.
    """
    error_models = {f"HTTP_{code}": Problem for code in errors}
    return Response(*(f"HTTP_{code}" for code in plain_codes), **error_models, **models)


def openapi_document() -> dict:
    """Return the OpenAPI document of the current app's API routes.

    Three additions to what SpecTree builds: error bodies are sent as
    `application/problem+json`, not `application/json`. A query parameter or header is
    either sent or absent, so the `null` that pydantic allows for optional fields is
    removed from their schemas. Authenticated operations get the `X-Clinic-ID` header,
    which authentication reads before any view runs.
    """
    document = copy.deepcopy(api_spec.spec)
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                _mark_problem_content(response)
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("query", "header"):
                    parameter["schema"] = _without_null(parameter["schema"])
            if operation.get("security"):
                operation["parameters"].append(dict(CLINIC_HEADER_PARAMETER))
    return document


def _mark_problem_content(response: dict) -> None:
    content = response.get("content") or {}
    body = content.get("application/json")
    if body is not None and body["schema"].get("$ref") == PROBLEM_SCHEMA_REF:
        content[PROBLEM_CONTENT_TYPE] = content.pop("application/json")


def _without_null(schema: dict) -> dict:
    """Drop the `null` branch of an optional parameter's `anyOf`."""
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    if not options or len(options) == len(schema["anyOf"]):
        return schema
    without_any_of = {
        name: value for name, value in schema.items() if name not in ("anyOf", "default")
    }
    if len(options) == 1:
        return without_any_of | options[0]
    return without_any_of | {"anyOf": options}
