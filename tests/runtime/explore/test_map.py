"""`invedge map`: the 2-D layout (PCA, t-SNE, UMAP, the fallbacks, the cache), the colours, the spread
sample of thumbnails, the PNG and the page's data, and the verb's one-line errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from map_testing import CLASSES, PER_CLASS, clustered, coloured_gallery, write_embeddings
from PIL import Image
from tiny import invedge

from invspread_edge_runtime.errors import ConfigError, MissingDependency
from invspread_edge_runtime.explore import layout2d
from invspread_edge_runtime.explore.items import ExploreItems
from invspread_edge_runtime.explore.layout2d import layout_2d, normalise, pca_2d
from invspread_edge_runtime.explore.map_page import MapOptions, colour_items, spread_sample


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test its own layout cache."""
    monkeypatch.setenv("INVEDGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def gallery(tmp_path) -> Path:
    return coloured_gallery(tmp_path)


class Items:
    """What layout_2d reads of ExploreItems: vectors, checksum, length."""

    def __init__(self, vectors: np.ndarray, checksum: str = "c0ffee") -> None:
        self.vectors, self.checksum = vectors, checksum

    def __len__(self) -> int:
        return len(self.vectors)


def test_pca_layout_is_in_the_unit_square_and_keeps_the_classes_apart():
    vectors = clustered()
    layout = layout_2d(Items(vectors), "pca")
    xy = layout.xy
    assert layout.method == "pca" and xy.shape == (len(vectors), 2) and xy.dtype == np.float32
    assert xy.min() >= 0 and xy.max() <= 1 and np.isclose(max(np.ptp(xy, axis=0)), 1)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    nearest = np.argsort(((xy[:, None] - xy[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() > 0.95


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    expected = centred @ vt[:2].T
    ours = pca_2d(x)
    for axis in range(2):  # each axis up to its sign
        assert (
            min(
                np.abs(ours[:, axis] - expected[:, axis]).max(),
                np.abs(ours[:, axis] + expected[:, axis]).max(),
            )
            < 1e-3
        )


def test_normalise_keeps_the_shape_and_centres_the_narrow_axis():
    xy = normalise(np.array([[0, 0], [4, 1], [2, 0.5]]))
    assert np.allclose(xy, [[0, 0.375], [1, 0.625], [0.5, 0.5]])
    assert np.allclose(normalise(np.ones((3, 2))), 0.5)


def test_a_second_layout_comes_from_the_cache(tmp_path):
    items = Items(clustered())
    first = layout_2d(items, "pca", seed=3)
    second = layout_2d(items, "pca", seed=3)
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.xy, second.xy)
    assert first.cache_path == tmp_path / "cache" / "maps" / "c0ffee-pca-3.npy" and first.cache_path.is_file()
    assert not layout_2d(items, "pca", seed=3, cache=False).from_cache
    first.cache_path.write_bytes(b"damaged")  # a damaged cache entry is computed again
    again = layout_2d(items, "pca", seed=3)
    assert not again.from_cache and np.array_equal(again.xy, first.xy)


def test_auto_falls_back_to_tsne_then_pca(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` fails as when it is not installed
    items = Items(clustered())
    tsne = layout_2d(items, "auto", cache=False)
    assert tsne.method == "tsne" and "t-SNE used" in tsne.note
    monkeypatch.setattr(layout2d, "TSNE_LIMIT", 10)
    assert layout_2d(items, "auto", cache=False).method == "pca"
    with pytest.raises(MissingDependency, match="umap-learn"):
        layout_2d(items, "umap")


def test_a_cached_umap_layout_imports_neither_umap_nor_sklearn(tmp_path):
    """A subprocess (this one may have imported them already): the cache is read first."""
    if importlib.util.find_spec("umap") is None:
        pytest.skip("umap-learn is not installed")
    maps = tmp_path / "cache" / "maps"
    maps.mkdir(parents=True)
    np.save(maps / "c0ffee-umap-0.npy", np.full((60, 2), 0.5, np.float32))
    code = (
        "import sys, numpy as np\n"
        "from invspread_edge_runtime.explore.layout2d import layout_2d\n"
        "class Items:\n"
        "    vectors, checksum = np.zeros((60, 4), np.float32), 'c0ffee'\n"
        "    def __len__(self): return 60\n"
        "layout = layout_2d(Items(), 'umap')\n"
        "print(layout.from_cache, layout.method, 'umap' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    env = dict(os.environ, INVEDGE_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "umap", "False", "False"]


def test_a_long_layout_is_announced_in_one_line(monkeypatch):
    monkeypatch.setattr(layout2d, "_tsne", lambda vectors, seed: pca_2d(vectors))  # fast stand-in
    lines: list[str] = []
    layout_2d(Items(clustered()), "tsne", log=lines.append)
    assert lines == ["tsne layout of 60 items… (cached for the next map of them)"]
    layout_2d(Items(clustered()), "tsne", log=lines.append)  # from the cache: nothing to announce
    layout_2d(Items(clustered()), "pca", log=lines.append)  # instant
    assert len(lines) == 1


def test_too_few_points_are_laid_out_by_pca():
    for count in (1, 2, 3):
        layout = layout_2d(Items(clustered()[:count]), "tsne", cache=False)
        assert layout.method == "pca" and layout.xy.shape == (count, 2)
    assert layout_2d(Items(clustered()[:1]), "pca").xy.tolist() == [[0.5, 0.5]]


def test_umap_keeps_the_classes_apart():
    pytest.importorskip("umap")
    vectors = clustered(n_per=40)
    layout = layout_2d(Items(vectors), "umap", cache=False)
    assert layout.method == "umap" and layout.xy.min() >= 0 and layout.xy.max() <= 1
    labels = np.repeat(np.arange(CLASSES), 40)
    nearest = np.argsort(((layout.xy[:, None] - layout.xy[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() > 0.95


def test_spread_sample_takes_one_point_per_cell_first():
    rng = np.random.default_rng(0)
    xy = rng.random((1000, 2)).astype(np.float32)
    picked = spread_sample(xy, 16, 4)
    assert len(picked) == 16 and len(set(picked.tolist())) == 16
    cells = {tuple(c) for c in np.minimum((xy[picked] * 4).astype(int), 3).tolist()}
    assert len(cells) == 16  # every cell of the 4 × 4 grid once
    more = spread_sample(xy, 100, 4)
    assert len(set(more.tolist())) == 100 and set(picked.tolist()) <= set(more.tolist())
    assert len(spread_sample(xy, 5000, 4)) == 1000


def test_quick_kmeans_finds_the_planted_groups():
    colouring = colour_items(
        ExploreItems.from_vectors(clustered()), MapOptions(color_by="cluster", k=CLASSES)
    )
    groups = colouring.groups
    assert {len(set(groups[c * PER_CLASS : (c + 1) * PER_CLASS].tolist())) for c in range(CLASSES)} == {1}
    assert len(set(groups.tolist())) == CLASSES


def test_options_refuse_bad_values():
    with pytest.raises(ConfigError, match="--method"):
        MapOptions(method="mds")
    with pytest.raises(ConfigError, match="--color-by"):
        MapOptions(color_by="size")
    with pytest.raises(ConfigError, match="--thumbs"):
        MapOptions(thumbs=-1)
    with pytest.raises(ConfigError, match="--clusters"):
        MapOptions(color_by="class", clusters=Path("clusters.json"))


# --- the verb ---------------------------------------------------------------------------------------
def run_json(capsys, *argv: object) -> dict:
    capsys.readouterr()
    assert invedge(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_map_writes_a_png_and_a_page_and_caches_the_layout(gallery, tmp_path, capsys):
    png, html = tmp_path / "map.png", tmp_path / "out" / "map.html"
    found = run_json(capsys, "map", gallery, "--method", "pca", "--out", png, "--html", html)
    assert found["count"] == CLASSES * PER_CLASS and found["color_by"] == "class"
    assert [entry["name"] for entry in found["legend"]] == ["class0", "class1", "class2"]
    assert [entry["count"] for entry in found["legend"]] == [PER_CLASS] * CLASSES
    assert found["layout"]["method"] == "pca" and not found["layout"]["from_cache"]
    assert {p["id"] for p in found["points"]} == set(json.loads((gallery / "ids.json").read_text()))
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in found["points"])
    with Image.open(png) as picture:
        assert picture.format == "PNG" and min(picture.size) >= 800
    thumbs = sorted((tmp_path / "out" / "map_files" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == CLASSES * PER_CLASS == found["thumbnails"]
    page = html.read_text()
    assert "InvedgeMap" in page and "<script src" not in page and "http" not in page.split("<script>")[0]

    again = run_json(capsys, "map", gallery, "--method", "pca", "--html", html)
    assert again["layout"]["from_cache"] and again["points"] == found["points"]
    assert invedge("map", gallery, "--method", "pca", "--out", png) == 0
    assert "from cache" in capsys.readouterr().err


def test_map_colours_by_a_clusters_file_or_a_quick_kmeans(gallery, tmp_path, capsys):
    ids = json.loads((gallery / "ids.json").read_text())
    assignments = tmp_path / "assignments.csv"
    with open(assignments, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "cluster"])
        writer.writerows([item, n % 2 if n < 50 else -1] for n, item in enumerate(ids))
    found = run_json(capsys, "map", gallery, "--method", "pca", "--clusters", assignments)
    assert found["color_by"] == "cluster" and [e["count"] for e in found["legend"]] == [25, 25]
    assert sum(p["group"] is None for p in found["points"]) == 10
    assert "warning:" not in capsys.readouterr().err  # the file names every item
    partial = tmp_path / "partial.csv"
    partial.write_text("id,cluster\n" + "".join(f"{item},0\n" for item in ids[:45]))
    found = run_json(capsys, "map", gallery, "--method", "pca", "--clusters", partial)
    assert sum(p["group"] is None for p in found["points"]) == 15
    capsys.readouterr()
    assert invedge("map", gallery, "--method", "pca", "--clusters", partial, "--json") == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "names 45 of the 60 items: the other 15" in warned[0]
    clusters_json = tmp_path / "clusters.json"
    clusters_json.write_text(json.dumps({"assignments": {item: 0 for item in ids}}))
    assert (
        run_json(capsys, "map", gallery, "--method", "pca", "--clusters", clusters_json)["legend"][0]["count"]
        == 60
    )
    kmeans = run_json(capsys, "map", gallery, "--method", "pca", "--color-by", "cluster", "--k", "3")
    assert sorted(e["count"] for e in kmeans["legend"]) == [PER_CLASS] * CLASSES
    assert run_json(capsys, "map", gallery, "--method", "pca", "--color-by", "none")["legend"] == []


def test_map_errors_are_one_line(gallery, tmp_path, capsys):
    no_classes = write_embeddings(tmp_path / "flat.emb", clustered(), [f"x{n}" for n in range(60)], None)
    foreign = tmp_path / "map_files"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "other.csv").write_text("id,cluster\nsomeone/else.png,0\n")
    cases = [
        (("map", gallery, "--clusters", tmp_path / "other.csv", "--json"), "names none of the 60 items"),
        (("map", gallery), "nothing to write"),
        (("map", gallery, "--method", "mds", "--json"), "--method mds is not a layout method"),
        (("map", gallery, "--thumbs", "-3", "--json"), "--thumbs -3 is out of range"),
        (("map", no_classes, "--color-by", "class", "--json"), "has no class folders"),
        (("map", gallery, "--clusters", tmp_path / "missing.csv", "--json"), "missing.csv not found"),
        (
            ("map", gallery, "--method", "pca", "--html", tmp_path / "map.html"),
            "it is never replaced",
        ),
        (("map", tmp_path / "nowhere.emb", "--json"), "not found"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert invedge(*argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert err.strip().startswith("error:")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_png_without_matplotlib_says_how_to_get_it(gallery, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    capsys.readouterr()
    assert invedge("map", gallery, "--method", "pca", "--out", tmp_path / "map.png") == 1
    err = capsys.readouterr().err
    assert "'matplotlib'" in err and "pip install matplotlib" in err and not (tmp_path / "map.png").exists()
    assert (
        invedge("map", gallery, "--method", "pca", "--html", tmp_path / "map.html") == 0
    )  # the page needs none


def test_a_page_holds_a_spread_sample_of_thumbnails(gallery, tmp_path, capsys):
    html = tmp_path / "map.html"
    assert (
        run_json(capsys, "map", gallery, "--method", "pca", "--html", html, "--thumbs", "9")["thumbnails"]
        == 9
    )
    data = json.loads(html.read_text().split('id="map-data">')[1].split("</script>")[0])
    assert (
        sum(bool(t) for t in data["thumbs"]) == 9
        and len(list((tmp_path / "map_files" / "thumbs").glob("*.jpg"))) == 9
    )
    assert all((tmp_path / t).is_file() for t in data["thumbs"] if t)
    assert (
        run_json(capsys, "map", gallery, "--method", "pca", "--html", html, "--thumbs", "0")["thumbnails"]
        == 0
    )
    assert not list(
        (tmp_path / "map_files" / "thumbs").glob("*.jpg")
    )  # the earlier thumbnails replaced, not kept


def test_a_page_names_no_image_files_unless_asked(gallery, tmp_path, capsys):
    html = tmp_path / "map.html"
    assert invedge("map", gallery, "--method", "pca", "--html", html) == 0
    page = html.read_text()
    assert str(tmp_path / "images") not in page
    assert json.loads(page.split('id="map-data">')[1].split("</script>")[0])["locations"] is None
    assert invedge("map", gallery, "--method", "pca", "--html", html, "--locations") == 0
    data = json.loads(html.read_text().split('id="map-data">')[1].split("</script>")[0])
    assert all(Path(location).is_file() for location in data["locations"])


def test_a_users_folder_of_pictures_is_never_replaced(gallery, tmp_path, capsys):
    holiday = tmp_path / "holiday_files"
    holiday.mkdir()
    (holiday / "beach.jpg").write_bytes(b"my photo")  # only .jpg files, as a map's thumbnails are
    capsys.readouterr()
    assert invedge("map", gallery, "--method", "pca", "--html", tmp_path / "holiday.html") == 1
    assert "never replaced" in capsys.readouterr().err
    assert (holiday / "beach.jpg").read_bytes() == b"my photo" and not (tmp_path / "holiday.html").exists()


def test_limits_are_said_before_the_work(gallery, tmp_path, capsys, monkeypatch):
    from invspread_edge_runtime import bounds

    monkeypatch.setattr(bounds, "MAP_PAGE_ITEMS", bounds.Bound("--html", 1, 59))
    capsys.readouterr()
    assert invedge("map", gallery, "--method", "pca", "--html", tmp_path / "map.html") == 1
    err = capsys.readouterr().err
    assert "--html takes at most 59 items" in err and "Traceback" not in err
    monkeypatch.setattr(layout2d, "TSNE_LIMIT", 10)  # t-SNE asked for by name still runs, after a warning
    capsys.readouterr()
    assert invedge("map", gallery, "--method", "tsne", "--no-cache", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["layout"]["method"] == "tsne"
    assert "warning: t-SNE of 60 items (above 10) may take many minutes" in captured.err
