"""The OpenAPI document of the JSON API and the two pages that browse it offline."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, url_for

from portal.api.openapi import DOCUMENT_PATH, openapi_document

bp = Blueprint("api_docs", __name__, url_prefix=f"/{DOCUMENT_PATH}")

#: Swagger UI sets inline `style` attributes and ReDoc injects `<style>` elements
#: (styled-components), so their pages allow inline styles. ReDoc embeds an icon font as a
#: `data:` URL and runs its search in a worker made from a `blob:` URL. Every script,
#: style sheet and request still comes from the portal only.
# NOTE: ReDoc 3.0.1 always shows Redocly's logo from cdn.redoc.ly in its side menu. This
# policy blocks that image, so the menu shows the words "API docs by" without a logo.
DOCUMENTATION_PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/")
def document():
    """Serve the OpenAPI 3.1 document; public, so integrators can read it without a key."""
    return jsonify(openapi_document())


def _documentation_page(viewer: str):
    page = render_template(
        "api/docs.html", viewer=viewer, document_url=url_for("api_docs.document")
    )
    return page, 200, {"Content-Security-Policy": DOCUMENTATION_PAGE_POLICY}


@bp.get("/swagger/")
def swagger():
    return _documentation_page("swagger")


@bp.get("/redoc/")
def redoc():
    return _documentation_page("redoc")
