"""`invedge dedup`: groups from the pairs (union-find), the kept image, the threshold (given, or the
valley of the nearest-neighbour scores), the outputs, and one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from dedup_testing import embed_folder, photos_with_copies, unit
from PIL import Image, ImageFilter

from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.explore.dedup import (
    NoValleyError,
    auto_threshold,
    choose_kept,
    find_duplicates,
    nn_histogram,
    parse_threshold,
    union_groups,
)
from invspread_edge_runtime.explore.items import ExploreItems, open_items


def items_of(vectors: np.ndarray, locations: list[str] | None = None) -> ExploreItems:
    ids = [f"img{i:04d}" for i in range(len(vectors))]
    return ExploreItems(vectors, ids, locations or [""] * len(vectors), {}, "test.emb", "embeddings")


def planted(n: int = 1500, copies: int = 30, d: int = 16, noise: float = 0.03, seed: int = 0):
    """Random unit rows and, after them, a noisy copy of each of the first `copies` rows."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, d)))
    return np.concatenate([x, unit(x[:copies] + noise * rng.standard_normal((copies, d)))])


@pytest.fixture(scope="module")
def photos(image_folder, tmp_path_factory):
    """The 40 images plus 3 planted copies (exact, brighter, JPEG q60), embedded; copy → original."""
    base = tmp_path_factory.mktemp("dedup")
    root, copies = photos_with_copies(image_folder, base / "photos")
    return embed_folder(root, base / "photos.emb"), copies


def reference_groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for a, b in pairs:
        parent[max(find(a), find(b))] = min(find(a), find(b))
    groups: dict[int, list[int]] = {}
    for row in range(n):
        groups.setdefault(find(row), []).append(row)
    return sorted(g for g in groups.values() if len(g) > 1)


@pytest.mark.parametrize("seed", range(4))
def test_union_groups_match_a_plain_union_find(seed):
    rng = np.random.default_rng(seed)
    n = 300
    first, second = rng.integers(0, n, 200), rng.integers(0, n, 200)
    keep = first != second
    first, second = np.minimum(first, second)[keep], np.maximum(first, second)[keep]
    found = union_groups(n, first, second)
    assert sorted(found) == reference_groups(n, list(zip(first.tolist(), second.tolist(), strict=True)))
    assert all(group == sorted(group) for group in found)


def test_a_chain_of_copies_is_one_group():
    assert union_groups(6, np.array([3, 0, 1]), np.array([4, 1, 5])) == [[0, 1, 5], [3, 4]]
    assert union_groups(3, np.zeros(0, np.int64), np.zeros(0, np.int64)) == []


def test_planted_copies_are_found_in_pairs_with_the_first_kept():
    vectors = planted()
    found = find_duplicates(items_of(vectors), 0.97)
    assert len(found.groups) == 30 and found.duplicates == 30 and found.exact
    assert sorted((g.members[0], g.members[1]) for g in found.groups) == [(i, 1500 + i) for i in range(30)]
    data = found.to_dict()
    assert data["counts"] == {"groups": 30, "in_groups": 60, "duplicates": 30}
    group = data["groups"][0]
    assert group["keep"] == group["members"][0]["id"] and group["members"][0]["kept"]
    assert group["members"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert 0.97 <= group["members"][1]["score"] < 1.0 and not group["members"][1]["kept"]
    json.dumps(data)  # what --json prints


def test_auto_threshold_lies_in_the_valley_between_copies_and_the_rest():
    vectors = planted()
    hist = nn_histogram(vectors)
    threshold = auto_threshold(hist)
    copies = hist.scores[1500:]
    others = hist.scores[30:1500]
    assert others.max() < threshold < copies.min()
    found = find_duplicates(items_of(vectors), "auto")
    assert found.chosen == "auto" and len(found.groups) == 30 and found.histogram is not None


def test_no_valley_is_a_clear_error():
    with pytest.raises(NoValleyError, match="no valley") as caught:
        auto_threshold(nn_histogram(planted(copies=0)))
    assert "--histogram" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("abc", "neither a number nor auto"),
        ("1.5", "--threshold"),
        ("-0.1", "--threshold"),
        ("nan", "--threshold"),
    ],
)
def test_bad_thresholds_are_refused(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_threshold(text)


def test_keep_largest_and_sharpest(tmp_path):
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    picture.save(tmp_path / "small.png")
    picture.resize((128, 128)).save(tmp_path / "large.png")
    picture.filter(ImageFilter.GaussianBlur(2)).save(tmp_path / "blurred.png")
    locations = [str(tmp_path / name) for name in ("blurred.png", "small.png", "large.png")] + [""]
    assert choose_kept(locations, [0, 1, 2, 3], "first") == 0
    assert choose_kept(locations, [0, 1, 2, 3], "largest") == 2
    assert choose_kept(locations, [0, 1, 3], "sharpest") == 1
    assert choose_kept([""] * 8, [4, 7], "sharpest") == 4  # nothing readable: the first


def test_an_image_too_big_to_decode_is_unreadable_not_a_traceback(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 64² is past twice this: a "bomb"
    locations = [str(tmp_path / "small.png"), str(tmp_path / "big.png")]
    assert choose_kept(locations, [0, 1], "largest") == 0  # the bomb counts as unreadable


def test_the_report_never_replaces_a_folder_it_did_not_write(photos, tmp_path, capsys, monkeypatch):
    from tiny import invedge

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r_files").mkdir()
    (tmp_path / "r_files" / "holiday.jpg").write_bytes(b"mine")
    capsys.readouterr()
    assert invedge("dedup", photos[0], "--report", "r.html") == 1
    one_line_error(capsys.readouterr().err, "is not an earlier output")
    assert (tmp_path / "r_files" / "holiday.jpg").read_bytes() == b"mine" and not (
        tmp_path / "r.html"
    ).exists()
    assert invedge("dedup", photos[0], "--report", "s.html") == 0
    first = sorted(p.name for p in (tmp_path / "s_files" / "thumbs").iterdir())
    assert invedge("dedup", photos[0], "--report", "s.html") == 0  # an earlier report's folder: replaced
    assert sorted(p.name for p in (tmp_path / "s_files" / "thumbs").iterdir()) == first
    assert oct((tmp_path / "s_files").stat().st_mode & 0o777) == oct(0o777 & ~current_umask())


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_auto_without_a_valley_searches_the_neighbours_once(tmp_path, capsys, monkeypatch):
    from dedup_testing import synthetic_folder
    from tiny import invedge

    from invspread_edge_runtime.explore import dedup

    calls = []
    real = dedup.nearest
    monkeypatch.setattr(dedup, "nearest", lambda *a, **k: calls.append(1) or real(*a, **k))
    emb = synthetic_folder(tmp_path / "random.emb", planted(n=400, copies=0))
    assert invedge("dedup", emb, "--threshold", "auto") == 1
    assert len(calls) == 1  # the error's histogram is drawn, not computed again


def test_the_cli_finds_the_planted_copies_and_writes_json_csv_and_histogram(photos, tmp_path, capsys):
    from tiny import invedge

    emb, copies = photos
    capsys.readouterr()
    code = invedge(
        "dedup",
        emb,
        "--threshold",
        "0.98",
        "--json",
        "--out",
        tmp_path / "dups.csv",
        "--histogram",
        tmp_path / "nn.png",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    pairs = {frozenset(m["id"] for m in g["members"]) for g in data["groups"]}
    assert {frozenset(pair) for pair in copies.items()} <= pairs
    assert data["counts"]["groups"] == len(data["groups"]) and data["written"]["histogram"]
    with Image.open(tmp_path / "nn.png") as png:
        assert png.format == "PNG"
    rows = list(csv.DictReader((tmp_path / "dups.csv").open()))
    assert len(rows) == data["counts"]["in_groups"] and sum(int(r["kept"]) for r in rows) == len(
        data["groups"]
    )

    assert invedge("dedup", emb, "--threshold", "0.98", "--out", tmp_path / "dups.json") == 0
    assert json.loads((tmp_path / "dups.json").read_text())["groups"] == data["groups"]
    err = capsys.readouterr().err
    assert "groups of near-duplicates" in err and "nearest-neighbour scores" not in err
    assert "can be below the threshold" in err  # the table's scores are to the kept image
    assert "at threshold 0.9800" in err


def one_line_error(err: str, *fragments: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err.replace("\n", " "), err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "high"], "neither a number nor auto"),
        (["--keep", "best"], "Invalid --keep"),
        (["--out", "groups.txt"], "neither .json nor .csv"),
        (["--report", "r.pdf"], "not an .html file"),
        (["--store", "milvus:g.db", "--collection", "c"], "not both"),
    ],
)
def test_bad_options_are_one_line_errors(photos, tmp_path, capsys, monkeypatch, args, words):
    from tiny import invedge

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invedge("dedup", photos[0], *args) == 1
    one_line_error(capsys.readouterr().err, words)


def test_auto_without_a_valley_names_the_histogram_it_wrote(tmp_path, capsys):
    from dedup_testing import synthetic_folder
    from tiny import invedge

    emb = synthetic_folder(tmp_path / "random.emb", planted(n=400, copies=0))
    capsys.readouterr()
    assert invedge("dedup", emb, "--threshold", "auto", "--histogram", tmp_path / "h.png") == 1
    one_line_error(capsys.readouterr().err, "no valley", f"histogram at {tmp_path / 'h.png'}")
    assert (tmp_path / "h.png").is_file()


def test_an_empty_gallery_is_a_one_line_error(photos, tmp_path, capsys):
    from tiny import invedge

    from invspread_edge_runtime.index.manage import (
        IndexBuildOptions,
        IndexRemoveOptions,
        create_gallery,
        remove_from_gallery,
    )

    emb = photos[0]
    index = tmp_path / "g.index"
    create_gallery(IndexBuildOptions(emb, out=index))
    remove_from_gallery(IndexRemoveOptions(open_items(emb).ids, index=index))
    capsys.readouterr()
    assert invedge("dedup", index) == 1
    one_line_error(capsys.readouterr().err, "holds no items", "invedge index add")


def test_a_milvus_collection_is_deduplicated_too(photos, tmp_path, capsys):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from tiny import invedge

    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.build import build_gallery

    emb, copies = photos
    store = f"milvus:{tmp_path / 'g.db'}"
    build_gallery(load_embeddings(emb), store, "photos").close()
    capsys.readouterr()
    assert invedge("dedup", "--store", store, "--collection", "photos", "--threshold", "0.98", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    pairs = {frozenset(m["id"] for m in g["members"]) for g in data["groups"]}
    assert {frozenset(pair) for pair in copies.items()} <= pairs
