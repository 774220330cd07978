"""Debian's Chromium driven by Playwright, for the tests that open a page the toolkit writes or serves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SKIP_WITHOUT_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no {CHROMIUM}: `make browser` installs Debian's chromium"
)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API); skips the test when Playwright is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is missing: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()
