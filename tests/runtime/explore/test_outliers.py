"""`invedge outliers`: uniqueness against a literal reference, planted odd items found first, the
files it writes, and its one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from map_testing import CLASSES, PER_CLASS, clustered, write_embeddings
from PIL import Image
from tiny import invedge

from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.explore.items import open_items
from invspread_edge_runtime.explore.neighbours import Neighbours
from invspread_edge_runtime.explore.uniqueness import OutlierOptions, _scores, find_outliers, uniqueness

ODD = 3  # planted items far from every group


def literal_uniqueness(vectors: np.ndarray, k: int) -> np.ndarray:
    """1 − the mean of each row's k highest cosines to the other rows, from the full matrix."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    return 1 - np.sort(sims, axis=1)[:, ::-1][:, :k].mean(axis=1)


@pytest.fixture
def gallery(tmp_path) -> Path:
    """3 tight groups of 20 images in class folders, plus ODD items pointing elsewhere (odd/)."""
    root = tmp_path / "images"
    rng = np.random.default_rng(5)
    odd = rng.standard_normal((ODD, 16)).astype(np.float32)
    vectors = np.concatenate([clustered(), odd / np.linalg.norm(odd, axis=1, keepdims=True)])
    ids = [f"class{c}/img{n:02d}.png" for c in range(CLASSES) for n in range(PER_CLASS)]
    ids += [f"odd/odd{n}.png" for n in range(ODD)]
    for name in ids:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (90, 90, 90)).save(root / name)
    return write_embeddings(tmp_path / "photos.emb", vectors.astype(np.float32), ids, root)


@pytest.mark.parametrize("k", [1, 5])
def test_uniqueness_is_one_minus_the_mean_cosine_to_the_k_nearest(gallery, k):
    items = open_items(str(gallery))
    np.testing.assert_allclose(
        uniqueness(items, k), literal_uniqueness(np.asarray(items.vectors), k), atol=1e-5
    )


def test_neighbours_not_found_are_left_out_of_the_mean():
    found = Neighbours(
        scores=np.array([[0.9, 0.7], [0.8, -1.0], [-1.0, -1.0]], dtype=np.float32),
        indices=np.array([[1, 2], [0, -1], [-1, -1]]),
        exact=False,
    )
    np.testing.assert_allclose(_scores(found), [0.2, 0.2, 1.0], atol=1e-6)


def test_planted_odd_items_come_first_with_their_nearest(gallery):
    items = open_items(str(gallery))
    odd = find_outliers(items, OutlierOptions(count=ODD + 2, neighbours=5))
    assert {Path(i).parts[0] for i in odd.ids[:ODD]} == {"odd"}
    assert np.all(np.diff(odd.scores) <= 0) and odd.scores[ODD - 1] > odd.median
    vectors = np.asarray(items.vectors)
    for row, near, score in zip(odd.indices, odd.nearest_ids, odd.nearest_scores, strict=True):
        sims = vectors @ vectors[row]
        sims[row] = -np.inf
        assert near == items.ids[int(np.argmax(sims))] and score == pytest.approx(sims.max(), abs=1e-5)
    result = odd.to_dict()
    assert result["count"] == ODD + 2 and result["exact"] is True and result["outliers"][0]["rank"] == 1


def test_too_many_asked_ranks_all_and_too_many_neighbours_is_refused(gallery):
    items = open_items(str(gallery))
    everything = find_outliers(items, OutlierOptions(count=1000, neighbours=2))
    assert len(everything) == len(items) and "all are ranked" in everything.notes[0]
    with pytest.raises(ConfigError, match=f"--neighbours {len(items)} needs more than"):
        find_outliers(items, OutlierOptions(count=3, neighbours=len(items)))


def test_the_verb_writes_ids_csv_json_and_grid(gallery, tmp_path, capsys):
    txt, table, whole, grid = (tmp_path / f"odd.{s}" for s in ("txt", "csv", "json", "png"))
    assert invedge("outliers", gallery, "--count", ODD, "-k", 5, "--out", txt, "--grid", grid) == 0
    assert invedge("outliers", gallery, "--count", ODD, "-k", 5, "--out", table) == 0
    assert invedge("outliers", gallery, "--count", ODD, "-k", 5, "--out", whole) == 0
    ids = txt.read_text().split()
    assert {Path(i).parts[0] for i in ids} == {"odd"}
    rows = list(csv.DictReader(table.open()))
    assert [r["id"] for r in rows] == ids and set(rows[0]) >= {
        "rank",
        "uniqueness",
        "nearest_id",
        "nearest_score",
    }
    assert [r["id"] for r in json.loads(whole.read_text())["outliers"]] == ids
    assert Image.open(grid).format == "PNG"
    printed = capsys.readouterr()
    assert ids[0] in printed.out and f"{ODD} least typical of {CLASSES * PER_CLASS + ODD}" in printed.err


def test_json_on_stdout_is_the_result(gallery, capsys):
    assert invedge("outliers", gallery, "-n", 2, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 2 and result["neighbours"] == 10 and result["median_uniqueness"] > 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--count", "0"], "--count 0 is out of range"),
        (["--count", "3", "--neighbours", "0"], "--neighbours 0 is out of range"),
        (["--count", "3", "--neighbours", "63"], "--neighbours 63 needs more than 63 items"),
        (["--count", "3", "--out", "odd.png"], "must end in .txt, .csv, .json"),
    ],
)
def test_bad_input_is_one_line(gallery, capsys, argv, words):
    assert invedge("outliers", gallery, *argv) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and err.startswith("error:") and len(err.splitlines()) == 1


def test_no_target_is_one_line(capsys):
    assert invedge("outliers", "--count", 3) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_a_small_gallery_lowers_the_default_neighbours_with_a_note(tmp_path, capsys):
    """8 items: the default 10 neighbours becomes the 7 others; a --neighbours given stays refused."""
    vectors = clustered()[::8]
    small = write_embeddings(tmp_path / "small.emb", vectors, [f"x{n}" for n in range(len(vectors))], None)
    capsys.readouterr()
    assert invedge("outliers", small, "-n", 3, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["neighbours"] == len(vectors) - 1
    assert f"uniqueness over the {len(vectors) - 1} others (--neighbours 10)" in captured.err
    assert invedge("outliers", small, "-n", 3, "--neighbours", 10) == 1
    assert "--neighbours 10 needs more than 10 items" in capsys.readouterr().err
