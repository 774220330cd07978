"""`invedge serve --watch SOURCE`: a video file watched in the background of the real service, its
matches at GET /v1/watch with the frame's time and the gallery image's URL, and on the page."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serve_client import get
from video_testing import FPS, make_video
from watch_testing import THRESHOLD, item_id, rgb_of

CHROMIUM = Path("/usr/bin/chromium")
WAIT_S = 60.0  # the watch of a 9-frame file on 2 busy cores


@pytest.fixture(scope="module")
def clip(watch_known, watch_strangers, tmp_path_factory) -> Path:
    """Gallery image A at frames 3 to 5 (0.12 s to 0.2 s), images absent from the gallery around it."""
    a = rgb_of(watch_known[0])
    images = [*watch_strangers[:3], a, a, a, *watch_strangers[3:6]]
    return make_video(tmp_path_factory.mktemp("serve_watch") / "clip.mp4", images, fps=FPS)


@pytest.fixture(scope="module")
def server(served, watch_model, watch_gallery, clip, image_folder):
    """One `invedge serve --watch` of `clip` for the tests of this module."""
    args = ("--watch", clip, "--threshold", THRESHOLD, "--image-root", image_folder)
    with served(watch_model, watch_gallery, *args) as server:
        yield server


def watched(server, after: int = 0) -> dict:
    """GET /v1/watch once the watch of the file has ended."""
    deadline = time.monotonic() + WAIT_S
    while True:
        reply = get(server.url, f"/v1/watch?after={after}")
        assert reply.status == 200, reply.body
        body = reply.json()
        if body["status"] in ("ended", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_watch_endpoint_reports_the_match_with_its_time_and_image(server, clip, watch_known):
    body = watched(server)
    assert body["status"] == "ended", body
    assert (body["source"], body["frames"], body["matches"], body["dropped"]) == (str(clip), 9, 1, 0)
    assert body["decoder"].startswith("pyav") and body["threshold"] == THRESHOLD
    [match] = body["recent"]
    assert (match["id"], match["frame"], match["at"], match["seq"]) == (
        item_id(watch_known[0]), 3, "0:00.120", 1
    )  # fmt: skip
    assert match["score"] >= 0.999 and match["latency_ms"] > 0
    image = get(server.url, match["image"])  # the matched gallery item's own image
    assert image.status == 200 and image.body == watch_known[0].read_bytes()
    assert watched(server, after=1)["recent"] == []  # only newer matches after the last one seen


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: `make browser` installs Debian's chromium")
def test_page_shows_the_live_match(server, watch_known):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is missing")
    watched(server)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url)
            match = page.locator("#matches .match")
            sync_api.expect(match).to_have_count(1, timeout=30_000)
            sync_api.expect(match).to_have_attribute("data-id", item_id(watch_known[0]))
            sync_api.expect(match.locator(".time")).to_have_text("0:00.120")
            sync_api.expect(match.locator(".tile img")).to_have_count(1)  # the gallery image is shown
            sync_api.expect(page.locator("#watch-status")).to_contain_text("ended")
        finally:
            browser.close()


def test_a_live_watch_stops_with_the_service(served, watch_model, watch_gallery, rtsp_server):
    rtsp_server.ensure_running()
    with served(watch_model, watch_gallery, "--watch", rtsp_server.live_url) as live:
        deadline = time.monotonic() + WAIT_S
        while (body := get(live.url, "/v1/watch").json())["frames"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert body["status"] == "watching" and body["live"] and body["frames"] > 0, body
    # leaving: SIGTERM, and the fixture asserts exit 0 within its time (the source closed, the thread joined)


def test_a_watch_that_cannot_open_fails_without_showing_its_password(
    served, watch_model, watch_gallery, silent_port
):
    url = f"rtsp://u:secret@127.0.0.1:{silent_port}/x"
    with served(watch_model, watch_gallery, "--watch", url, "--open-timeout", "1") as failing:
        deadline = time.monotonic() + WAIT_S
        while (reply := get(failing.url, "/v1/watch")).json()["status"] in ("starting", "opening"):
            assert time.monotonic() < deadline, reply.body
            time.sleep(0.2)
        body = reply.json()
        assert body["status"] == "failed" and body["error"], body
        assert b"secret" not in reply.body and "secret" not in failing.stderr(), (
            reply.body,
            failing.stderr(),
        )


def test_serve_refuses_a_watch_it_cannot_read_in_one_line(capsys, watch_model, watch_gallery, watch_known):
    from tiny import invedge

    for args, message in [
        (["--watch", watch_known[0]], "is an image"),
        (["--watch", "ftp://cam/x"], "unsupported source"),
        (["--watch", "rtsp://cam/x", "--threshold", "2"], "--threshold 2 is out of range"),
        (["--watch", "rtsp://cam/x", "--start", "5"], "--start and --end apply to video files"),
        (["--watch", "rtsp://cam/x", "--decoder", "vlc"], "--decoder"),
        (["--threshold", "0.5", "--every", "2"], "--threshold, --every only apply to a watch"),
    ]:
        code = invedge("serve", watch_model, "--index", watch_gallery, "--port", "0", *args)
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: ") and message in err, (args, err)


def test_a_search_the_gallery_cannot_answer_now_is_no_match_and_the_watch_goes_on(caplog):
    from types import SimpleNamespace

    import numpy as np

    from invspread_edge_runtime.errors import EmptyGalleryError
    from invspread_edge_runtime.serve.errors import ServeError
    from invspread_edge_runtime.serve.watching import _Searcher

    failures: list[Exception] = []

    def search(queries, k, space_id):
        raise failures.pop(0)

    emptied = ServeError(409, "the gallery is empty")
    emptied.__cause__ = EmptyGalleryError("g is empty", "Add items")
    gallery = SimpleNamespace(count=lambda: 3, search=search)
    searcher = _Searcher(SimpleNamespace(gallery=gallery, meta=SimpleNamespace(space_id="s")))
    queries = np.zeros((1, 4), np.float32)
    failures[:] = [emptied, ServeError(503, "Milvus unreachable"), ServeError(503, "Milvus unreachable")]
    with caplog.at_level("WARNING", logger="invedge.serve"):
        assert [searcher(queries, 1) for _ in range(3)] == [None, None, None]
    assert sum("Milvus unreachable" in r.getMessage() for r in caplog.records) == 1  # said once
    failures[:] = [ServeError(422, "another dimension")]
    with pytest.raises(ServeError):
        searcher(queries, 1)


def test_metrics_count_the_watch(server):
    watched(server)
    text = get(server.url, "/metrics").body.decode()
    assert "invedge_watch_frames_total 9.0" in text and "invedge_watch_matches_total 1.0" in text, text
    assert "invedge_watch_dropped_total 0.0" in text and "invedge_watch_reconnects_total 0.0" in text
