"""The page of `invedge map --html` in Debian's Chromium (Playwright): it loads without a network, its
thumbnails load, hovering a point shows its image and id, a click on a point shows the neighbours that
`nearest` gives (in its order, with its scores), and the wheel and a drag move the map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from browser_testing import SKIP_WITHOUT_CHROMIUM, chromium
from map_testing import clustered, write_embeddings
from tiny import invedge

pytestmark = SKIP_WITHOUT_CHROMIUM
NEIGHBOURS = 6


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def map_page(image_folder, tmp_path_factory):
    """`invedge map --html` of the 40 Fashion-MNIST test images (4 class folders), and its embeddings."""
    base = tmp_path_factory.mktemp("map_page")
    ids = sorted(str(path.relative_to(image_folder)) for path in image_folder.rglob("*.*"))
    emb = write_embeddings(base / "photos.emb", clustered(n_per=10, classes=4), ids, image_folder)
    html = base / "map.html"
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INVEDGE_CACHE_DIR", str(cache))
        assert invedge("map", emb, "--method", "pca", "--html", html, "--neighbours", NEIGHBOURS) == 0
    return html, emb


@pytest.fixture
def page(browser, map_page):
    html, _ = map_page
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    offline = []
    page.route("http*://**", lambda route: (offline.append(route.request.url), route.abort()))
    page.goto(html.as_uri())
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=30_000)
    yield page
    assert not offline, f"the page asked the network for {offline}"
    page.close()


def screen_points(page) -> list[dict]:
    return page.evaluate(
        "() => window.invedgeMap && JSON.parse(document.getElementById('map-data').textContent).ids"
        ".map((id, i) => ({id, ...window.invedgeMap.screenPoint(i)}))"
    )


def lone_point(points: list[dict], apart: float = 12.0) -> int:
    """A point with no other within `apart` px, so that a click there can only mean it."""
    xy = np.array([[p["x"], p["y"]] for p in points])
    gaps = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    lone = np.flatnonzero(gaps.min(axis=1) > apart)
    assert len(lone), "every point has a close neighbour on the map"
    return int(lone[0])


def loaded_images(page, selector: str) -> list[int]:
    page.wait_for_function(
        f"() => [...document.querySelectorAll({json.dumps(selector)})].every(img => img.complete)",
        timeout=10_000,
    )
    return page.locator(selector).evaluate_all("imgs => imgs.map(img => img.naturalWidth)")


def test_the_legend_shows_the_class_folders(page):
    legend = page.locator(".im-legend-entry").evaluate_all(
        "rows => rows.map(row => [row.querySelector('.im-legend-name').textContent, "
        "row.querySelector('.im-legend-count').textContent])"
    )
    assert legend == [[f"class{c}", "10"] for c in range(4)]


def test_hovering_a_point_shows_its_image_and_id(page):
    points = screen_points(page)
    i = lone_point(points)
    page.mouse.move(points[i]["x"], points[i]["y"])
    tip = page.locator(".im-tip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-id") == points[i]["id"]
    assert points[i]["id"] in tip.inner_text()
    assert all(width > 0 for width in loaded_images(page, ".im-tip img"))


def test_a_click_shows_the_neighbours_nearest_gives(page, map_page):
    from invspread_edge_runtime.explore.items import open_items
    from invspread_edge_runtime.explore.neighbours import nearest

    items = open_items(str(map_page[1]))
    found = nearest(np.asarray(items.vectors, np.float32), NEIGHBOURS)
    points = screen_points(page)
    i = lone_point(points)
    page.mouse.click(points[i]["x"], points[i]["y"])
    page.wait_for_function("document.getElementById('map').dataset.state === 'shown'", timeout=10_000)
    assert page.locator("#map").get_attribute("data-selected") == items.ids[i]
    shown = page.locator(".im-neighbours .neighbour").evaluate_all(
        "items => items.map(item => [item.dataset.id, Number(item.dataset.score)])"
    )
    assert [item for item, _ in shown] == [items.ids[j] for j in found.indices[i]]
    assert np.allclose([score for _, score in shown], found.scores[i], atol=1e-3)
    widths = loaded_images(page, ".im-panel img")
    assert len(widths) == NEIGHBOURS + 1 and all(width > 0 for width in widths)

    page.locator(".im-neighbours .neighbour").nth(1).click()  # a neighbour in the list: its own neighbours
    second = int(found.indices[i][1])
    page.wait_for_function(
        f"document.getElementById('map').dataset.selected === {json.dumps(items.ids[second])}", timeout=10_000
    )
    page.wait_for_function("document.getElementById('map').dataset.state === 'shown'", timeout=10_000)
    assert (
        page.locator(".im-neighbours .neighbour").first.get_attribute("data-id")
        == items.ids[found.indices[second][0]]
    )


def test_the_wheel_zooms_and_a_drag_pans(page):
    before = screen_points(page)
    canvas = page.locator(".im-canvas").bounding_box()
    centre = (canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.wheel(0, -400)
    zoomed = screen_points(page)
    spread = lambda pts: np.ptp([p["x"] for p in pts])  # noqa: E731
    assert spread(zoomed) > 1.5 * spread(before)
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 80, centre[1] + 30, steps=5)
    page.mouse.up()
    moved = screen_points(page)
    assert np.allclose(moved[0]["x"] - zoomed[0]["x"], 80, atol=1) and np.allclose(
        moved[0]["y"] - zoomed[0]["y"], 30, atol=1
    )
    assert page.locator("#map").get_attribute("data-selected") is None  # a drag is not a click
    page.locator(".im-reset").click()
    assert np.allclose([p["x"] for p in screen_points(page)], [p["x"] for p in before], atol=0.5)
