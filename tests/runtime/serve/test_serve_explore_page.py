"""The serve page's Map and Duplicates views and their API (GET /v1/map, /v1/map/neighbours,
/v1/duplicates): the real `invedge serve` of the tiny model over the 40 test images plus two planted
exact copies; the API's answers checked against the gallery's own vectors, then both views in Debian's
Chromium (Playwright): the map's thumbnails load, a click shows the API's neighbours, the duplicate
groups are the planted ones with their images."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser_testing import SKIP_WITHOUT_CHROMIUM, chromium
from tiny import invedge

SLOW_MS = 60_000  # the first map on 2 busy cores
# planted exact copies: id → the class folder whose first PNG it copies
COPIES = {"class0/copy_a.png": 0, "class2/copy_b.png": 2}


@pytest.fixture(scope="module")
def gallery(tiny_export, image_folder, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """The test images plus two exact copies, embedded and indexed: (index, image root, copy → original id)."""
    base = tmp_path_factory.mktemp("explore_gallery")
    root = base / "images"
    shutil.copytree(image_folder, root)
    originals = {}
    for copy, cls in COPIES.items():
        original = sorted((root / f"class{cls}").glob("*.png"))[0]
        shutil.copyfile(original, root / copy)
        originals[copy] = str(original.relative_to(root))
    emb, index = base / "gallery.emb", base / "gallery.index"
    assert invedge("embed", tiny_export / "model.onnx", root, "--out", emb, "-b", "ort-cpu") == 0
    spread_out(emb, originals)
    assert invedge("index", "build", emb, "--out", index) == 0
    return index, root, originals


def spread_out(emb: Path, originals: dict[str, str]) -> None:
    """Give the embeddings folder vectors in four clear groups by class folder (the tiny model's are
    nearly all alike), each copy its original's vector: the same space, so the model serves it."""
    from invspread_edge_runtime.files import sha256_file

    ids = json.loads((emb / "ids.json").read_text())
    manifest = json.loads((emb / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, manifest["dim"])) * 4
    rows = {i: centres[int(Path(i).parts[0][-1])] + rng.standard_normal(manifest["dim"]) * 1.5 for i in ids}
    rows |= {copy: rows[original] for copy, original in originals.items()}
    vectors = np.array([rows[i] / np.linalg.norm(rows[i]) for i in ids], dtype=np.float32)
    np.save(emb / "embeddings.npy", vectors, allow_pickle=False)
    manifest["embeddings_sha256"] = sha256_file(emb / "embeddings.npy")
    (emb / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def server(served, tiny_export, gallery, tmp_path_factory):
    """One `invedge serve` of the gallery for the module, its map cache in a folder of its own."""
    index, root, _ = gallery
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INVEDGE_CACHE_DIR", str(tmp_path_factory.mktemp("explore_cache")))
        with served(tiny_export / "model.onnx", index, "--image-root", root) as server:
            yield server


def get(server, path: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def gallery_vectors(index: Path):
    from invspread_edge_runtime.explore.items import open_items

    return open_items(str(index))


# --- the API ----------------------------------------------------------------------------------------


def test_the_map_lays_out_every_item_with_its_image_and_class(server, gallery):
    items = gallery_vectors(gallery[0])
    status, first = get(server, "/v1/map?method=pca")
    assert status == 200, first
    assert first["ids"] == items.ids and first["count"] == len(items) == 42
    xy = np.array(first["xy"]).reshape(-1, 2)
    assert xy.shape == (42, 2) and xy.min() >= 0 and xy.max() <= 1
    assert all(url.startswith("/v1/gallery/") and url.endswith("/image") for url in first["thumbs"])
    assert [entry["name"] for entry in first["legend"]] == [f"class{c}" for c in range(4)]
    assert first["checksum"] == items.checksum and first["layout"]["method"] == "pca"
    started = time.perf_counter()
    assert get(server, "/v1/map?method=pca") == (200, first)  # kept: the same answer, at once
    assert time.perf_counter() - started < 2


def test_a_points_neighbours_are_the_nearest_by_cosine(server, gallery):
    items = gallery_vectors(gallery[0])
    checksum = get(server, "/v1/map?method=pca")[1]["checksum"]
    vectors = np.asarray(items.vectors)
    for row in (0, 17, 41):
        status, answer = get(server, f"/v1/map/neighbours?item={row}&k=5&checksum={checksum}")
        assert status == 200, answer
        scores = vectors @ vectors[row]
        scores[row] = -np.inf
        assert [n["index"] for n in answer["neighbours"]][:3] == list(np.argsort(-scores, kind="stable")[:3])
        assert [n["score"] for n in answer["neighbours"]] == pytest.approx(
            np.sort(scores)[::-1][:5], abs=1e-4
        )
        assert answer["id"] == items.ids[row]
    assert get(server, f"/v1/map/neighbours?item=0&checksum={'0' * 64}")[0] == 409
    assert get(server, "/v1/map/neighbours?item=42")[0] == 422


def test_duplicates_are_the_planted_copies_with_their_images(server, gallery):
    _, _, originals = gallery
    status, answer = get(server, "/v1/duplicates?threshold=0.999")
    assert status == 200, answer
    groups = [sorted(m["id"] for m in group["members"]) for group in answer["groups"]]
    assert sorted(groups) == sorted(sorted([copy, original]) for copy, original in originals.items())
    assert answer["counts"] == {"groups": 2, "in_groups": 4, "duplicates": 2}
    for group in answer["groups"]:
        assert all(m["image"].startswith("/v1/gallery/") for m in group["members"])
        assert all("location" not in m for m in group["members"])  # no server file paths
        assert group["keep"] in [m["id"] for m in group["members"]]


def test_a_changed_gallery_is_a_new_map(server, gallery):
    from serve_client import call, post_files

    _, root, _ = gallery
    before = get(server, "/v1/map?method=pca")[1]
    image = sorted((root / "class1").glob("*.png"))[0].read_bytes()
    assert (
        post_files(server.url, "/v1/gallery", [("new.png", image)], {"id": "uploaded/new.png"}).status == 201
    )
    try:
        after = get(server, "/v1/map?method=pca")[1]
        assert after["count"] == 43 and after["ids"][-1] == "uploaded/new.png"
        assert after["checksum"] != before["checksum"] and after["thumbs"][-1] == ""  # no file on the server
        old = f"/v1/map/neighbours?item=0&checksum={before['checksum']}"
        assert get(server, old)[0] == 409  # a page drawn before the change is told to reload
    finally:
        assert call(server.url, "DELETE", "/v1/gallery/uploaded/new.png").status == 200
    assert get(server, "/v1/map?method=pca")[1]["checksum"] == before["checksum"]


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/duplicates?threshold=1.5", 422),
        ("/v1/duplicates?threshold=abc", 422),
        ("/v1/map?method=tsne3", 422),
        ("/v1/map/neighbours?item=-1", 422),
    ],
)
def test_bad_parameters_are_422_in_the_error_shape(server, path, status):
    code, answer = get(server, path)
    assert code == status and answer["error"]["message"]


def test_the_views_are_behind_the_guard(server):
    for path in ("/v1/map", "/v1/duplicates", "/v1/map/neighbours?item=0"):
        code, answer = get(server, path, {"Host": "elsewhere.example"})
        assert code == 421 and "this machine's own names" in answer["error"]["message"]


def test_a_gallery_too_large_for_the_page_is_409():
    from invspread_edge_runtime.serve.errors import ServeError
    from invspread_edge_runtime.serve.explore import MAX_VIEW_ITEMS, ExploreViews

    class Served:
        def current(self):
            return object()

        def count(self):
            return MAX_VIEW_ITEMS + 1

    class Service:
        gallery = Served()

    with pytest.raises(ServeError) as refused:
        ExploreViews().duplicates(Service(), 0.95)
    assert refused.value.status == 409 and "invedge dedup" in refused.value.hint


class StubGallery:
    """What ExploreViews reads of a served Milvus gallery: `count` planted rows (pairs of copies);
    `hold`: an event its reading waits for (a computation that takes long)."""

    def __init__(self, count: int = 20, hold=None) -> None:
        rng = np.random.default_rng(0)
        rows = rng.standard_normal((count // 2, 16)).astype(np.float32)
        self.vectors = np.repeat(rows / np.linalg.norm(rows, axis=1, keepdims=True), 2, axis=0)
        self.dim, self.collection, self.space, self.hold = 16, "stub", {"space_id": "stub"}, hold
        self.store = type("Store", (), {"shown": "milvus:stub.db"})()

    def iter_items(self):
        if self.hold is not None:
            self.hold.wait(10)
        return ((f"item{n}", vector, "") for n, vector in enumerate(self.vectors))

    # the served side: the gallery now and its size
    def current(self):
        return self

    def count(self):
        return len(self.vectors)


def stub_service(gallery: StubGallery):
    images = type("Images", (), {"may_serve": staticmethod(lambda location: False)})()
    return type("Service", (), {"gallery": gallery, "images": images})()


def test_tsne_of_a_gallery_above_the_limit_is_422(monkeypatch):
    from invspread_edge_runtime.explore import layout2d
    from invspread_edge_runtime.serve.errors import ServeError
    from invspread_edge_runtime.serve.explore import ExploreViews

    monkeypatch.setattr(layout2d, "TSNE_LIMIT", 10)
    views, service = ExploreViews(), stub_service(StubGallery(20))
    with pytest.raises(ServeError) as refused:
        views.map(service, "tsne")
    assert refused.value.status == 422 and "t-SNE of 20 items" in refused.value.message
    assert "method=pca" in refused.value.hint
    assert views.map(service, "pca")["count"] == 20  # the other layouts still answer


def test_a_threshold_finding_too_many_pairs_is_422_with_the_next_step(monkeypatch):
    from invspread_edge_runtime.serve import explore
    from invspread_edge_runtime.serve.errors import ServeError

    monkeypatch.setattr(explore, "MAX_PAIRS", 50)
    views, service = explore.ExploreViews(), stub_service(StubGallery(20))
    with pytest.raises(ServeError) as refused:
        views.duplicates(service, 0.0)  # every one of the 190 pairs
    assert refused.value.status == 422 and "more than 50 pairs" in refused.value.message
    assert "higher threshold" in refused.value.hint and "invedge dedup" in refused.value.hint
    assert views.duplicates(service, 0.999)["counts"]["groups"] == 10  # the planted copies


def test_a_request_finding_a_computation_running_is_503_busy(monkeypatch):
    import threading

    from invspread_edge_runtime.serve import explore
    from invspread_edge_runtime.serve.errors import ServeError

    monkeypatch.setattr(explore, "BUSY_WAIT_S", 0.2)
    hold = threading.Event()
    views, service = explore.ExploreViews(), stub_service(StubGallery(20, hold))
    first = threading.Thread(target=views.duplicates, args=(service, 0.999))
    first.start()
    try:
        time.sleep(0.2)  # the first request reads the gallery, holding the views
        started = time.perf_counter()
        with pytest.raises(ServeError) as busy:
            views.map(service, "pca")
        assert busy.value.status == 503 and busy.value.headers.get("Retry-After")
        assert time.perf_counter() - started < 2
    finally:
        hold.set()
        first.join(10)
    assert views.map(service, "pca")["count"] == 20  # free again: answered


# --- the page -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    yield page
    page.close()


def loaded_widths(page, selector: str) -> list[int]:
    page.wait_for_function(
        f"() => [...document.querySelectorAll({json.dumps(selector)})].every(img => img.complete)",
        timeout=20_000,
    )
    return page.locator(selector).evaluate_all("imgs => imgs.map(img => img.naturalWidth)")


@SKIP_WITHOUT_CHROMIUM
def test_the_map_view_shows_the_gallery_and_a_clicks_neighbours(server, page):
    page.goto(f"{server.url}/#map/pca")
    page.wait_for_function("document.getElementById('map-view').dataset.state === 'ready'", timeout=SLOW_MS)
    assert page.locator("#search-view").is_hidden()
    points = page.evaluate("() => Array.from({length: 42}, (_, i) => window.invedgeServeMap.screenPoint(i))")
    xy = np.array([[p["x"], p["y"]] for p in points])
    gaps = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    row = int(np.flatnonzero(gaps.min(axis=1) > 12)[0])  # a point no other is near: a click means it
    checksum = get(server, "/v1/map?method=pca")[1]["checksum"]
    expected = get(server, f"/v1/map/neighbours?item={row}&k=8&checksum={checksum}")[1]
    page.mouse.click(*xy[row])
    page.wait_for_function("document.getElementById('map').dataset.state === 'shown'", timeout=20_000)
    assert page.locator("#map").get_attribute("data-selected") == expected["id"]
    shown = page.locator(".im-neighbours .neighbour").evaluate_all("items => items.map(i => i.dataset.id)")
    assert shown == [n["id"] for n in expected["neighbours"]]
    widths = loaded_widths(page, ".im-panel img")
    assert len(widths) == 9 and all(width > 0 for width in widths)  # the item and its 8 neighbours


@SKIP_WITHOUT_CHROMIUM
def test_the_duplicates_view_shows_the_groups_with_their_images(server, page, gallery):
    _, _, originals = gallery
    page.goto(f"{server.url}/#duplicates")
    page.wait_for_function(
        "['done', 'error'].includes(document.getElementById('duplicates-view').dataset.state)",
        timeout=SLOW_MS,
    )
    page.locator("#threshold").fill("0.999")
    page.locator("#duplicate-controls button").click()
    page.wait_for_function(
        "document.getElementById('duplicates-view').dataset.state === 'done' && "
        "document.querySelector('#duplicates-view .view-status').textContent.includes('cosine 0.999')",
        timeout=SLOW_MS,
    )
    groups = page.locator("#groups .group").evaluate_all(
        "groups => groups.map(g => [...g.querySelectorAll('.member')].map(m => m.dataset.id))"
    )
    assert sorted(map(sorted, groups)) == sorted(sorted([c, o]) for c, o in originals.items())
    kept = page.locator("#groups .group").evaluate_all(
        "groups => groups.map(g => [g.dataset.keep, g.querySelector('.member').dataset.id])"
    )
    assert all(keep == first for keep, first in kept)  # the kept one first, marked
    assert page.locator(".member.kept").count() == 2
    widths = loaded_widths(page, "#groups img")
    assert len(widths) == 4 and all(width > 0 for width in widths)
    assert "2 groups" in page.locator("#duplicates-view .view-status").inner_text()
