"""A screenshot of `invedge serve`'s page showing one query's neighbours (README: docs/figures/serve_page.png).

Starts `invedge serve MODEL --index INDEX --port 0` on loopback, opens its page in headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright for Python: `make browser` installs it), uploads QUERY
through the page, waits for the neighbours and their thumbnails, and writes the PNG. After `make demo`:
    python scripts/serve_screenshot.py runs/demo/export runs/demo/gallery.index runs/demo/queries/*/*.png \
        --image-root runs/demo/gallery
(the first query is used). tests/runtime/serve/test_serve_page.py takes the same steps and checks them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 120


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="export folder or model file (as `invedge embed`)")
    p.add_argument("index", type=Path, help="index file from `invedge index build`")
    p.add_argument("query", type=Path, nargs="+", help="query image (the first one is used)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("docs/figures/serve_page.png"))
    p.add_argument("--image-root", type=Path, action="append", default=[],
                   help="folder of the gallery's images, for the thumbnails (as `invedge serve --image-root`)")  # fmt: skip
    args = p.parse_args(argv)

    server = start_server(args.model, args.index, args.image_root)
    try:
        url = wait_for_url(server)
        screenshot(url, args.query[0], args.k, args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


def start_server(model: Path, index: Path, image_roots: list[Path]) -> subprocess.Popen[str]:
    invedge = Path(sys.executable).with_name("invedge")  # the console script of this environment
    command = [str(invedge), "serve", str(model), "--index", str(index), "--port", "0"]
    command += [arg for root in image_roots for arg in ("--image-root", str(root))]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def wait_for_url(server: subprocess.Popen[str]) -> str:
    """The URL of the service's one `serving http://HOST:PORT (...)` line on stderr."""
    timer = threading.Timer(START_TIMEOUT_S, server.kill)  # a service that never says it serves
    timer.start()
    try:
        for line in server.stderr:
            if found := re.search(r"serving (http://\S+)", line):
                # keep reading stderr, or a full pipe would one day block the service
                threading.Thread(target=server.stderr.read, daemon=True).start()
                return found.group(1)
            sys.stderr.write(line)
    finally:
        timer.cancel()
    sys.exit(f"error: `invedge serve` stopped before serving (exit {server.wait()})")


def screenshot(url: str, query: Path, k: int, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-state", "ready")
        page.locator("#k").fill(str(k))
        page.locator("#file").set_input_files(query)
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=60_000)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
