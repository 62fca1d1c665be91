"""Headless Chromium from Debian, driven by Playwright (its own browser download is never used)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    # Without these, Chromium tries to reach Google's services at start-up.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def chromium_page(*, locale: str = "pt-BR") -> Iterator:
    import pytest
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM_PATH) is None:
        pytest.fail(
            f"{CHROMIUM_PATH} is missing: run `make test`, which installs Debian's chromium"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()
