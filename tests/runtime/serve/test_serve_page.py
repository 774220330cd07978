"""The page of `invedge serve` in a real browser: headless Chromium (Debian's) driven by Playwright uploads
a query and shows the neighbours `invedge search` prints for the same image, in its order, with its scores;
the service's JSON errors reach the person at the page, and with a token the page, its files and its
requests need the browser's login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import invedge

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is missing: pip install -e '.[dev]'"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no {CHROMIUM}: `make browser` installs Debian's chromium"
)
expect = sync_api.expect
SLOW_MS = 60_000  # a first search on 2 busy cores: load the model session, decode, embed


@pytest.fixture(scope="module")
def server(served, tiny_export, serve_index, image_folder):
    """One `invedge serve` of the tiny model and the 40 test images for the tests without a token."""
    with served(tiny_export / "model.onnx", serve_index, "--image-root", image_folder) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    yield page
    page.close()


def open_page(page, url: str, state: str = "ready") -> None:
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-state", state, timeout=SLOW_MS)


def upload(page, image: Path | dict, k: int = 5, state: str = "done") -> None:
    page.locator("#k").fill(str(k))
    page.locator("#file").set_input_files(image)
    expect(page.locator("body")).to_have_attribute("data-state", state, timeout=SLOW_MS)


def shown_neighbours(page) -> list[dict]:
    return page.locator("#results .neighbour").evaluate_all(
        """items => items.map(item => ({
            id: item.dataset.id,
            score: Number(item.dataset.score),
            text: item.querySelector(".score").textContent,
            thumbnail: item.querySelector(".tile img") !== null,
        }))"""
    )


def test_page_shows_the_neighbours_invedge_search_prints(
    server, page, serve_index, image_folder, capsys, tmp_path
):
    query = sorted((image_folder / "class2").glob("*.png"))[0]
    capsys.readouterr()
    assert invedge("search", serve_index, query, "--k", "5", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    expected = printed["results"][0]["neighbours"]

    open_page(page, server.url)
    expect(page.locator("#model")).to_contain_text(f"backend {printed['backend']}")
    upload(page, query, k=5)
    shown = shown_neighbours(page)
    page.screenshot(path=tmp_path / "serve_page.png", full_page=True)

    assert [n["id"] for n in shown] == [hit["id"] for hit in expected]  # the same items, in its order
    for neighbour, hit in zip(shown, expected, strict=True):
        assert neighbour["score"] == pytest.approx(hit["score"], abs=5e-5)  # the same to 4 decimals
        assert neighbour["text"] == f"{neighbour['score']:.4f}"
    assert all(n["thumbnail"] for n in shown)  # the gallery's images are on the server
    expect(page.locator("#query-name")).to_have_text(query.name)


def test_page_shows_the_services_error_message(server, page, image_folder):
    not_an_image = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image\n"}
    query = sorted((image_folder / "class1").glob("*.png"))[0]
    png = {"name": query.name, "mimeType": "image/png", "buffer": query.read_bytes()}
    # what the service answers, asked directly
    answers = [
        page.request.post(f"{server.url}/v1/search?k=5", multipart={"image": not_an_image}),
        page.request.post(f"{server.url}/v1/search?k=0", multipart={"image": png}),
    ]
    assert [answer.status for answer in answers] == [415, 422]
    messages = [answer.json()["error"]["message"] for answer in answers]

    open_page(page, server.url)
    upload(page, not_an_image, state="error")
    expect(page.locator("#error")).to_contain_text(messages[0])
    expect(page.locator("#results .neighbour")).to_have_count(0)

    upload(page, query, k=0, state="error")
    expect(page.locator("#error")).to_contain_text(messages[1])

    upload(page, query, k=3)  # a good request clears the error
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#results .neighbour")).to_have_count(3)


def test_with_a_token_the_page_needs_the_browsers_login(
    served, browser, serve_index, tiny_export, image_folder
):
    query = sorted((image_folder / "class3").glob("*.jpg"))[0]
    token = "page-test-token"
    args = (tiny_export / "model.onnx", serve_index, "--image-root", image_folder)

    with served(*args, token=token) as server:
        stranger = browser.new_context()
        try:  # no login: the browser gets no page (headless, it cannot ask), nor its files or /docs
            with pytest.raises(sync_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                stranger.new_page().goto(server.url)
            for path in ("/", "/static/page.js", "/static/page.css", "/docs", "/openapi.json"):
                assert stranger.request.get(server.url + path).status == 401, path
        finally:
            stranger.close()

        user = browser.new_context(
            http_credentials={"username": "me", "password": token}, viewport={"width": 1000, "height": 640}
        )
        try:
            page = user.new_page()
            open_page(page, server.url)  # the browser logs in: the token as the password
            upload(page, query)  # its search and thumbnails carry the login too
            shown = shown_neighbours(page)
        finally:
            user.close()

    assert len(shown) == 5 and shown[0]["id"].endswith(query.name)  # a gallery image is its own nearest
    assert all(n["thumbnail"] for n in shown)
