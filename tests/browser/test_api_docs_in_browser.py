"""Swagger UI and ReDoc in headless Chromium: they render and reach no other origin."""

from __future__ import annotations

import contextlib
import threading
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from portal.config import Settings
from tests.support.browser import chromium_page

pytestmark = [pytest.mark.browser]


@contextlib.contextmanager
def serve_portal(tmp_path):
    """Serve the portal on a free port of 127.0.0.1 in a thread; yield its base URL.

    The documentation pages read no database row and no stored object, so the app gets a
    fresh SQLite file and a storage endpoint that is never called.
    """
    from portal.app import create_app

    settings = Settings(
        secret_key="browser-test-secret-" + "x" * 32,
        portal_base_url="http://127.0.0.1:8000",
        database_url=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        data_dir=str(tmp_path / "data"),
        huey_sqlite_path=str(tmp_path / "huey.sqlite3"),
        s3_endpoint_url="http://127.0.0.1:9",
        s3_public_endpoint_url="http://127.0.0.1:9",
    )
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


def load_page(base_url: str, path: str, rendered: str) -> dict:
    """Open `path` in Chromium, wait for `rendered` to show, and record the traffic.

    Returns the URLs requested, the URLs whose request failed with the failure text, and
    the console errors.
    """
    traffic = {"requested": [], "failed": {}, "console_errors": []}
    with chromium_page() as page:
        page.on("request", lambda request: traffic["requested"].append(request.url))
        page.on(
            "requestfailed",
            lambda request: traffic["failed"].__setitem__(request.url, request.failure),
        )
        page.on(
            "console",
            lambda message: traffic["console_errors"].append(message.text)
            if message.type == "error"
            else None,
        )
        page.goto(base_url + path)
        page.locator(rendered).first.wait_for(timeout=30_000)
        # Give late requests (images, telemetry) time to start.
        page.wait_for_timeout(2_000)
    return traffic


def test_swagger_ui_requests_only_the_portal(tmp_path):
    with serve_portal(tmp_path) as base_url:
        # Swagger UI draws one block per operation; the upload is one of them.
        traffic = load_page(
            base_url, "/api/schema/swagger/", ".opblock-summary-path[data-path='/api/studies/']"
        )
    assert base_url + "/api/schema/" in traffic["requested"]
    assert base_url + "/static/vendor/swagger-ui/swagger-ui-bundle.js" in traffic["requested"]
    outside = [url for url in traffic["requested"] if origin(url) not in (base_url, "data:")]
    assert outside == []
    assert traffic["failed"] == {}
    assert [text for text in traffic["console_errors"] if "Content Security" in text] == []


def test_redoc_reaches_no_other_origin(tmp_path):
    with serve_portal(tmp_path) as base_url:
        # ReDoc renders the document's description once it has read the document.
        traffic = load_page(base_url, "/api/schema/redoc/", "text=Upload DICOM studies as ZIP")
    assert base_url + "/api/schema/" in traffic["requested"]
    outside = [url for url in traffic["requested"] if origin(url) not in (base_url, "data:")]
    # The vendored bundle has its logo addresses removed (static/vendor/README.md).
    assert outside == []
    assert not any("telemetry" in url or "otel" in url for url in traffic["requested"])
    assert [text for text in traffic["console_errors"] if "Content Security" in text] == []
