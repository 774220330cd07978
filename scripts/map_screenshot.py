"""A screenshot of the page `invedge map --html` writes, one item clicked to show its neighbours and another
hovered (docs/EXPLORE.md: docs/figures/explore_map.png).

Opens the page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python: `make
browser` installs it), clicks the item `--select` (default: the first item lying alone on the map), hovers
another, waits for the thumbnails and writes the PNG. After `make demo`:
    invedge map runs/demo/gallery.emb --html runs/demo/map.html --out runs/demo/map.png
    python scripts/map_screenshot.py runs/demo/map.html --zoom 500 --out docs/figures/explore_map.png
tests/runtime/explore/test_map_page.py takes the same steps and checks them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from invspread_edge_runtime.bounds import Bound, check_bounds, helped
from invspread_edge_runtime.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser_testing import CHROMIUM  # the one place that names the browser

LIMITS = {
    "width": Bound("--width", 320, 3840),  # the viewport: the PNG is this size
    "height": Bound("--height", 240, 2160),
    "zoom": Bound("--zoom", 0, 5000),  # wheel pixels: each 100 zooms about 1.2 times
}
POINTS = (  # each item's id and place on the screen
    "() => JSON.parse(document.getElementById('map-data').textContent).ids"
    ".map((id, i) => ({id, ...window.invedgeMap.screenPoint(i)}))"
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page", type=Path, help="the .html that `invedge map --html` wrote")
    p.add_argument("--select", help="the id of the item to click (default: one lying alone on the map)")
    p.add_argument("--out", type=Path, default=Path("docs/figures/explore_map.png"))
    p.add_argument(
        "--zoom",
        type=int,
        default=0,
        help=helped("wheel steps (pixels) to zoom in at the clicked item", LIMITS["zoom"]),
    )
    p.add_argument("--width", type=int, default=1280, help=helped("viewport width", LIMITS["width"]))
    p.add_argument("--height", type=int, default=760, help=helped("viewport height", LIMITS["height"]))
    args = p.parse_args(argv)
    try:
        check_bounds(LIMITS, vars(args))
    except ConfigError as exc:
        p.error(str(exc))
    screenshot(args.page, args.select, args.out, (args.width, args.height), args.zoom)
    print(f"wrote {args.out}")


def screenshot(page_path: Path, select: str | None, out: Path, size: tuple[int, int], zoom: int = 0) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(page_path.absolute().as_uri())
        page.wait_for_function("document.body.dataset.state === 'ready'")
        points = page.evaluate(POINTS)
        lone = _lone(points)
        chosen = _named(points, select) if select else lone[0]
        if zoom:  # closer around the clicked item, dragged to the middle: the points there become thumbnails
            page.mouse.move(points[chosen]["x"], points[chosen]["y"])
            page.mouse.wheel(0, -zoom)
            points = page.evaluate(POINTS)
            box = page.locator(".im-canvas").bounding_box()
            page.mouse.move(points[chosen]["x"], points[chosen]["y"])
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            points = page.evaluate(POINTS)
        page.mouse.click(points[chosen]["x"], points[chosen]["y"])
        page.wait_for_function("document.getElementById('map').dataset.state === 'shown'")
        aim = (points[chosen]["x"] + 220, points[chosen]["y"])  # hover one a little away from the click
        hover = points[min((n for n in lone if n != chosen), key=lambda n: math.dist(aim, _xy(points[n])))]
        page.mouse.move(hover["x"], hover["y"])
        page.wait_for_function("() => [...document.images].every(img => img.complete)")
        page.wait_for_timeout(300)  # the thumbnails drawn on the canvas as they load
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out)
        browser.close()


def _named(points: list[dict], select: str) -> int:
    for n, point in enumerate(points):
        if point["id"] == select:
            return n
    raise SystemExit(f"error: no item {select!r} in the page")


def _lone(points: list[dict], apart: float = 10.0) -> list[int]:
    """The points with no other within `apart` px (a click there means them), else all."""
    lone = [
        n
        for n, point in enumerate(points)
        if all(math.dist(_xy(point), _xy(other)) > apart for other in points if other is not point)
    ]
    return lone or list(range(len(points)))


def _xy(point: dict) -> tuple[float, float]:
    return point["x"], point["y"]


if __name__ == "__main__":
    main()
