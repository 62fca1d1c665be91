"""A doctor's main job in headless Chromium: sign in, upload, wait, view the overlay."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from portal.clinics.services import DEMO_ACCOUNTS_PATH
from scripts.devstack import run_flask
from tests.support.browser import chromium_page
from tests.support.stack import running_stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DEMO_ACCOUNTS = json.loads(DEMO_ACCOUNTS_PATH.read_text(encoding="utf-8"))
STUDY_ZIP = "ct_philips_phantom_study_localizer_2tilted_axial_summary.zip"


def canvas_pixels(page) -> np.ndarray:
    png = page.locator("#niivue-canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_doctor_signs_in_uploads_and_views(tmp_path, shared_dicom_dir):
    doctor = next(a for a in DEMO_ACCOUNTS["accounts"] if a["role"] == "doctor")
    with running_stack(tmp_path) as stack, chromium_page() as page:
        run_flask(stack.env, "demo", "seed")
        base_url = stack.env["PORTAL_BASE_URL"]
        # The Content Security Policy must let the viewer load everything it needs.
        csp_violations = []
        page.on(
            "console",
            lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None,
        )
        page.goto(base_url + "/")

        # The portal sends the browser to the identity provider's own sign-in page.
        assert page.url.startswith(stack.env["OIDC_ISSUER"])
        page.fill("#username", doctor["username"])
        page.fill("#password", doctor["password"])
        page.click("button[type=submit]")
        page.wait_for_url(base_url + "/studies/")
        assert page.locator("html").get_attribute("lang") == "pt-BR"
        assert page.locator("h1").inner_text() == "Estudos"

        page.click("text=Novo estudo")
        assert page.locator("input[name=categories]:checked").count() == 5
        page.set_input_files("input[name=file]", str(shared_dicom_dir / STUDY_ZIP))
        page.click("button:has-text('Enviar')")
        page.wait_for_selector("#study-status[data-status=succeeded]", timeout=240_000)

        page.click("#open-viewer")
        page.wait_for_selector("#viewer[data-state=ready]", timeout=180_000)
        assert "inteligência artificial" in page.locator(".ai-notice").inner_text()
        assert page.locator("#legend li").count() >= 2
        page.wait_for_timeout(1500)

        # Kept with the test's files for a person to look at when the test fails.
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        pixels = canvas_pixels(page)
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        spread = pixels.max(axis=2) - pixels.min(axis=2)
        grey = (spread <= 6) & (red > 40)
        coloured = spread >= 60
        assert grey.sum() > 5000, "no greyscale image drawn"
        assert coloured.sum() > 2000, "no coloured overlay drawn"

        # Hiding every category removes the overlay colours and keeps the image.
        for checkbox in page.locator("#legend input[type=checkbox]").all():
            checkbox.uncheck()
        page.wait_for_timeout(1000)
        hidden = canvas_pixels(page)
        hidden_spread = hidden.max(axis=2) - hidden.min(axis=2)
        assert (hidden_spread >= 60).sum() < coloured.sum() / 10
        assert ((hidden_spread <= 6) & (hidden[..., 0] > 40)).sum() > 5000
        assert red.shape == green.shape == blue.shape

        assert csp_violations == []

        # Signing out ends the portal session and the provider's, so the next visit asks
        # for the password again instead of signing in silently.
        page.click("button:has-text('Sair')")
        page.wait_for_url(base_url + "/auth/signed-out")
        page.goto(base_url + "/studies/")
        assert page.url.startswith(stack.env["OIDC_ISSUER"])
        assert page.locator("#password").count() == 1
