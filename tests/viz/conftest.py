"""One headless Chromium for the whole session (the Debian package, driven by PyPI playwright with
``executable_path``: no browser download), and `open_page`: a page opened from ``file://`` that must
load with no console error, no uncaught exception, no failed request, no request off the disk, and
every image decoded (lazy images, loaded when scrolled near, are all made to load first)."""
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("JAXCAM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM:  # counted by the skip budget: CI fails (.ci/run installs chromium with apt-get)
        pytest.skip("no Chromium: apt-get install -y chromium (or set JAXCAM_CHROMIUM to its path)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Opened:
    """A loaded page and what went wrong while loading it."""

    def __init__(self, browser, path: Path):
        self.errors, self.failed, self.requests = [], [], []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(Path(path).resolve().as_uri(), wait_until="load")

    def check(self):
        """No console error, no failed request, only file:// (and data:) requests, every image decoded."""
        self.page.wait_for_load_state("load")
        self.page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
        self.page.wait_for_function("Array.from(document.images).every(i => !i.hasAttribute('src') || i.complete)")
        assert not self.errors, self.errors
        assert not self.failed, self.failed
        assert all(u.startswith(("file://", "data:")) for u in self.requests), self.requests
        broken = self.page.evaluate(
            "Array.from(document.images).filter(i => i.hasAttribute('src') && !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)")  # the large view's images have no src until it opens
        assert not broken, broken
        return self

    def visible(self, selector: str) -> int:
        return self.page.locator(selector).filter(visible=True).count()


@pytest.fixture
def open_page(browser):
    opened = []

    def open_(path) -> Opened:
        opened.append(Opened(browser, path))
        return opened[-1]

    yield open_
    for o in opened:
        o.page.close()
