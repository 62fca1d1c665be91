"""Errors users can act on, and the handlers that render them as HTML or problem+json."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from portal.extensions import db

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Refusals that leave an `access.denied` audit event: no or a bad credential (401), a
#: missing right (403) and a resource that does not exist for the caller (404).
AUDITED_DENIAL_STATUSES = (401, 403, 404)


class UserFacingError(Exception):
    """An error whose translated message is safe to show; `code` is stable for clients."""

    code = "error"
    status = 400
    title = _l("Request failed")
    message = _l("The request could not be completed.")

    def __init__(
        self, message=None, *, code: str | None = None, status: int | None = None, **params
    ):
        super().__init__(code or self.code)
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.params = params

    def detail(self) -> str:
        return str(self.message) % self.params if self.params else str(self.message)

    def problem_fields(self) -> dict:
        """Return members the problem+json body adds to the standard ones."""
        return {}


class NotFound(UserFacingError):
    code = "not_found"
    status = 404
    title = _l("Not found")
    message = _l("The resource does not exist or belongs to another clinic.")


class Unauthorized(UserFacingError):
    code = "unauthorized"
    status = 401
    title = _l("Authentication required")
    message = _l("Send a valid API key or access token as 'Authorization: Bearer <credential>'.")


class Forbidden(UserFacingError):
    code = "forbidden"
    status = 403
    title = _l("Access denied")
    message = _l("You do not have access to this action.")


class Conflict(UserFacingError):
    code = "conflict"
    status = 409
    title = _l("Conflict")


class UploadTooLarge(UserFacingError):
    code = "upload_too_large"
    status = 413
    title = _l("Upload too large")
    message = _l("The file is larger than the limit of %(limit)s. Send a smaller ZIP.")


def problem(status: int, code: str, title: str, detail: str, **extra):
    """Build an RFC 9457 problem+json response."""
    body = {
        "type": f"/api/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_CONTENT_TYPE
    return response


def wants_problem_json() -> bool:
    return request.path.startswith("/api/")


def format_bytes(size_bytes: int) -> str:
    from flask_babel import format_decimal

    gib = size_bytes / 1024**3
    if gib >= 1:
        return _("%(size)s GiB", size=format_decimal(round(gib, 2)))
    return _("%(size)s MiB", size=format_decimal(round(size_bytes / 1024**2, 1)))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(UserFacingError)
    def handle_user_facing(error: UserFacingError):
        db.session.rollback()
        if error.status in AUDITED_DENIAL_STATUSES:
            from portal.audit.services import record_denied_request

            record_denied_request(status=error.status, code=error.code)
        if wants_problem_json():
            response = problem(
                error.status, error.code, str(error.title), error.detail(), **error.problem_fields()
            )
            if error.status == 401:
                # RFC 6750: a 401 names the scheme the client should use.
                response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
            return response
        return render_template(
            "errors/error.html", title=error.title, detail=error.detail(), status=error.status
        ), error.status

    @app.before_request
    def reject_oversized_body():
        # Checked before the multipart parser runs: Werkzeug's own limit stops the parser
        # midway and leaves its temporary file open.
        limit = app.config["MAX_CONTENT_LENGTH"]
        if limit and request.content_length and request.content_length > limit:
            raise UploadTooLarge(limit=format_bytes(app.config["PORTAL_SETTINGS"].max_upload_bytes))

    @app.errorhandler(413)
    def handle_too_large(error):
        limit = format_bytes(app.config["PORTAL_SETTINGS"].max_upload_bytes)
        too_large = UploadTooLarge(limit=limit)
        return handle_user_facing(too_large)

    @app.errorhandler(HTTPException)
    def handle_http(error: HTTPException):
        titles = {
            400: _l("Invalid request"),
            401: _l("Authentication required"),
            403: _l("Access denied"),
            404: _l("Not found"),
            405: _l("Method not allowed"),
            429: _l("Too many requests"),
        }
        title = str(titles.get(error.code, error.name))
        if wants_problem_json():
            code = (error.name or "error").lower().replace(" ", "_")
            return problem(error.code or 500, code, title, title)
        return render_template(
            "errors/error.html", title=title, detail="", status=error.code
        ), error.code

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        db.session.rollback()
        logger.exception("unhandled error on %s %s", request.method, request.path)
        title = _("Internal error")
        detail = _("Something went wrong on our side. Try again in a few minutes.")
        if wants_problem_json():
            return problem(500, "internal_error", title, detail)
        return render_template("errors/error.html", title=title, detail=detail, status=500), 500
