"""The page of `invedge dedup --report` in Debian's Chromium (Playwright): it opens from disk with no
network, every thumbnail loads, the groups shown are the JSON's, and the kept image is marked."""

from __future__ import annotations

import json

import pytest
from browser_testing import SKIP_WITHOUT_CHROMIUM, chromium
from dedup_testing import embed_folder, photos_with_copies
from tiny import invedge

pytestmark = SKIP_WITHOUT_CHROMIUM


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def report(image_folder, tmp_path_factory):
    """The report and the JSON of one run over the 40 images with 3 planted copies."""
    base = tmp_path_factory.mktemp("dedup_page")
    root, _ = photos_with_copies(image_folder, base / "photos")
    emb = embed_folder(root, base / "photos.emb")
    html = base / "dups #1.html"  # a name whose thumbnails folder must be URL-quoted in <img src>
    assert invedge("dedup", emb, "--threshold", "0.98", "--report", html, "--out", base / "dups.json") == 0
    return html, json.loads((base / "dups.json").read_text())


def test_the_report_shows_every_group_with_thumbnails_that_load(browser, report):
    html, data = report
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    assert int(page.inner_text("#group-count")) == data["counts"]["groups"] >= 3
    assert page.locator("section.group").count() == data["counts"]["groups"]
    images = page.locator("figure img")
    assert images.count() == data["counts"]["in_groups"]
    for index in range(images.count()):
        images.nth(index).scroll_into_view_if_needed()  # lazy images load once in view
    page.wait_for_function("[...document.querySelectorAll('figure img')].every(i => i.complete)")
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.naturalWidth)")
    assert all(width > 0 for width in widths)
    assert page.eval_on_selector("img.histogram", "i => i.naturalWidth") > 0
    kept = page.eval_on_selector_all("figure.kept img", "imgs => imgs.map(i => i.alt)")
    assert kept == [group["keep"] for group in data["groups"]]
    assert all(url.startswith("file://") for url in requests)  # nothing from a network
    page.close()
