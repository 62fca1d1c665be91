"""Sign-in and sign-out in headless Chromium against the dev identity provider."""

from __future__ import annotations

import json

import pytest

from portal.clinics.services import DEMO_ACCOUNTS_PATH
from scripts.devstack import run_flask
from tests.support.browser import chromium_page
from tests.support.stack import running_stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DEMO_ACCOUNTS = json.loads(DEMO_ACCOUNTS_PATH.read_text(encoding="utf-8"))


def test_sign_in_and_logout_in_browser(tmp_path):
    doctor = next(a for a in DEMO_ACCOUNTS["accounts"] if a["role"] == "doctor")
    with running_stack(tmp_path) as stack, chromium_page() as page:
        run_flask(stack.env, "demo", "seed")
        base_url = stack.env["PORTAL_BASE_URL"]
        issuer = stack.env["OIDC_ISSUER"]
        csp_violations = []
        page.on(
            "console",
            lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None,
        )

        # Asking for the upload page sends the browser to the provider, then back to it.
        page.goto(base_url + "/studies/new")
        assert page.url.startswith(issuer + "/interaction/")
        page.fill("#username", doctor["username"])
        page.fill("#password", doctor["password"])
        page.click("button[type=submit]")
        page.wait_for_url(base_url + "/studies/new")
        assert page.locator("h1").inner_text() == "Novo estudo"
        # Cookies are not separated by port, so the provider's cookies on 127.0.0.1 are
        # listed too; the portal's is the one named "session".
        portal_cookies = [c for c in page.context.cookies(base_url) if c["name"] == "session"]
        assert len(portal_cookies) == 1
        assert portal_cookies[0]["httpOnly"] is True
        assert portal_cookies[0]["sameSite"] == "Lax"

        # Sign-out goes through the provider's Cognito-shaped /logout and back.
        with page.expect_request(lambda request: request.url.startswith(issuer + "/logout?")):
            page.click("button:has-text('Sair')")
        page.wait_for_url(base_url + "/auth/signed-out")
        assert page.locator("h1").inner_text() == "Você saiu do portal"

        # A browser that kept the old cookie is not signed in: it is sent to sign in again.
        replay = page.context.browser.new_context(locale="pt-BR")
        try:
            replay.add_cookies(portal_cookies)
            old_cookie_page = replay.new_page()
            old_cookie_page.goto(base_url + "/studies/")
            assert old_cookie_page.url.startswith(issuer)
            assert old_cookie_page.locator("#password").count() == 1
        finally:
            replay.close()
        assert csp_violations == []
