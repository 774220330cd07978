"""`invedge select`: greedy k-center against a literal reference, the typical start, the coverage
curve, near-duplicates left out, the files it writes, and its one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from map_testing import CLASSES, PER_CLASS, clustered, coloured_gallery, write_embeddings
from PIL import Image
from tiny import invedge

from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.explore import select
from invspread_edge_runtime.explore.select import SelectOptions, farthest_first, select_items, typical


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


MARGIN = 1e-4  # each reference pick beats the runner-up by this much: float32 rounding cannot flip it


def literal_k_center(vectors: np.ndarray, count: int, first: int | None, eligible=None, before=()):
    """Greedy k-center from the full cosine matrix, one pick at a time, as the textbook writes it;
    `before`: rows picked earlier (not returned), then `first` is the row farthest from them. A
    row is picked once. Also returns the smallest lead of a pick over the runner-up."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    candidates = [i for i in range(len(vectors)) if (eligible is None or eligible[i]) and i not in before]
    leads = []

    def farthest(nearest: np.ndarray, picks: list[int]) -> int:
        left = sorted((nearest[i], i) for i in candidates if i not in picks)
        if len(left) > 1:
            leads.append(left[1][0] - left[0][0])
        return left[0][1]

    if before:
        nearest = sims[:, list(before)].max(axis=1)
        first = farthest(nearest, [])
    picks, distances, radii, means = [first], [1 - nearest[first] if before else np.nan], [], []
    while True:
        nearest = sims[:, [*before, *picks]].max(axis=1)  # each item's cosine to its nearest pick
        radii.append(1 - nearest.min())
        means.append(1 - nearest.mean())
        if len(picks) == count:
            return picks, distances, radii, means, min(leads, default=np.inf)
        far = farthest(nearest, picks)
        picks.append(far)
        distances.append(1 - nearest[far])


@pytest.mark.parametrize("block", [7, 65_536])
def test_farthest_first_is_the_literal_greedy_k_center(monkeypatch, block):
    monkeypatch.setattr(select, "BLOCK", block)  # blocks that split the rows unevenly give the same
    vectors = unit_rows(120)
    indices, distances, curve_max, curve_mean = farthest_first(vectors, 15, 3)
    picks, ref_distances, radii, means, lead = literal_k_center(vectors, 15, 3)
    assert lead > MARGIN  # the data decides every pick clearly (no near-tie for another BLAS to flip)
    assert indices.tolist() == picks
    np.testing.assert_allclose(distances, ref_distances, atol=1e-5)
    np.testing.assert_allclose(curve_max, radii, atol=1e-5)
    np.testing.assert_allclose(curve_mean, means, atol=1e-5)
    assert np.all(np.diff(curve_max) <= 1e-6) and np.all(np.diff(curve_mean) <= 1e-6)


def test_ineligible_items_are_never_picked_but_still_covered():
    vectors = unit_rows(80, seed=1)
    eligible = np.arange(80) % 3 != 0
    indices, _, curve_max, _ = farthest_first(vectors, 10, 1, eligible)
    picks, _, radii, _, lead = literal_k_center(vectors, 10, 1, eligible)
    assert lead > MARGIN and indices.tolist() == picks and all(eligible[indices])
    np.testing.assert_allclose(curve_max, radii, atol=1e-5)


def test_picks_made_before_count_as_picks(monkeypatch):
    monkeypatch.setattr(select, "CENTRES_AT_ONCE", 2)  # rows picked before, scored a few at a time
    vectors = unit_rows(90, seed=4)
    before = np.array([5, 40, 41, 77, 12])
    eligible = np.ones(90, dtype=bool)
    eligible[before] = False
    indices, distances, curve_max, curve_mean = farthest_first(vectors, 8, None, eligible, already=before)
    picks, ref_distances, radii, means, lead = literal_k_center(
        vectors, 8, None, before=tuple(before.tolist())
    )
    assert lead > MARGIN and indices.tolist() == picks and not set(picks) & set(before.tolist())
    np.testing.assert_allclose(distances, ref_distances, atol=1e-5)  # the first pick's too: from those before
    np.testing.assert_allclose(curve_max, radii, atol=1e-5)
    np.testing.assert_allclose(curve_mean, means, atol=1e-5)


@pytest.mark.parametrize("eligible", [None, "most"])
def test_copies_of_picked_rows_never_make_a_row_picked_twice(eligible):
    """Rows repeated exactly: once every distinct row is picked, all score 1 to a pick; the picks go
    on over rows not picked yet, each row at most once."""
    distinct = unit_rows(3, seed=5)
    vectors = np.concatenate([distinct, distinct, distinct[:1]])  # rows 0..2, again 3..5, and 6 = 0
    allowed = None if eligible is None else np.arange(len(vectors)) != 4
    count = len(vectors) - (0 if allowed is None else 1)
    indices, *_ = farthest_first(vectors, count, 0, allowed)
    expected = range(len(vectors)) if allowed is None else np.flatnonzero(allowed)
    assert sorted(indices.tolist()) == list(expected)  # every allowed row once

    before = np.array([1])
    indices, *_ = farthest_first(vectors, 6, None, already=before)
    assert len(set(indices.tolist())) == 6 and 1 not in indices.tolist()


def test_the_typical_start_has_the_highest_mean_cosine_to_all(monkeypatch):
    monkeypatch.setattr(select, "BLOCK", 5)
    vectors = clustered()
    mean_cos = (vectors @ vectors.T).mean(axis=1)
    assert typical(vectors) == int(np.argmax(mean_cos))
    eligible = np.ones(len(vectors), dtype=bool)
    eligible[np.argmax(mean_cos)] = False
    assert typical(vectors, eligible) == int(np.argsort(-mean_cos)[1])


def test_one_pick_per_cluster_first_and_the_result_says_the_coverage(gallery):
    from invspread_edge_runtime.explore.items import open_items

    picked = select_items(open_items(str(gallery)), SelectOptions(count=CLASSES + 2))
    classes = {Path(i).parts[0] for i in picked.ids[:CLASSES]}
    assert len(classes) == CLASSES  # the first picks spread over the three groups
    assert picked.start == "typical" and picked.total == CLASSES * PER_CLASS and not picked.notes
    assert picked.distances[1] > 0.5 > picked.distances[-1]  # far groups first, then within one
    out = picked.to_dict()
    assert [row["id"] for row in out["selected"]] == picked.ids
    assert out["coverage"]["max_distance"] == pytest.approx(picked.coverage_max, abs=1e-6)
    assert [p["count"] for p in out["curve"]] == [1, 2, 5]
    assert all(Path(row["location"]).is_file() for row in out["selected"])


def test_seeded_starts_repeat_and_too_many_asked_selects_all(gallery):
    from invspread_edge_runtime.explore.items import open_items

    items = open_items(str(gallery))
    one = select_items(items, SelectOptions(count=4, seed=7))
    assert one.ids == select_items(items, SelectOptions(count=4, seed=7)).ids and one.start == "seed 7"
    everything = select_items(items, SelectOptions(count=1000))
    assert sorted(everything.ids) == sorted(items.ids) and "all are selected" in everything.notes[0]
    assert everything.coverage_max == pytest.approx(0, abs=1e-6)


def test_near_duplicates_are_left_out_of_the_choice(tmp_path):
    from invspread_edge_runtime.explore.items import open_items

    base = unit_rows(30, d=16, seed=2)
    copies = base[:10] + 0.001 * unit_rows(10, d=16, seed=3)  # a near-copy of each of the first ten
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.concatenate([base, copies]).astype(np.float32)
    ids = [f"img{n:03d}.png" for n in range(len(vectors))]
    items = open_items(str(write_embeddings(tmp_path / "d.emb", vectors, ids, None)))
    picked = select_items(items, SelectOptions(count=40, exclude_duplicates=0.99))
    assert picked.excluded == 10 and len(picked) == 30 and picked.notes
    pairs = [{f"img{n:03d}.png", f"img{n + 30:03d}.png"} for n in range(10)]
    assert all(len(pair & set(picked.ids)) == 1 for pair in pairs)  # one of each pair, never both


def test_bad_options_are_refused_when_made():
    with pytest.raises(ConfigError, match="--count 0 is out of range"):
        SelectOptions(count=0)
    with pytest.raises(ConfigError, match=r"--exclude-duplicates 1\.5 is out of range"):
        SelectOptions(count=3, exclude_duplicates=1.5)


def test_the_verb_writes_ids_csv_json_grid_and_curve(gallery, tmp_path, capsys):
    files = {s: tmp_path / f"pick{s}" for s in (".txt", ".csv", ".json")}
    for suffix, path in files.items():
        argv = ["select", gallery, "--count", 5, "--out", path]
        assert invedge(*argv, *(["--json"] if suffix == ".json" else [])) == 0
    capsys.readouterr()
    ids = files[".txt"].read_text().split()
    assert len(ids) == 5
    rows = list(csv.DictReader(files[".csv"].open()))
    assert [r["id"] for r in rows] == ids and rows[0]["rank"] == "1" and rows[0]["distance"] == ""
    assert [r["id"] for r in json.loads(files[".json"].read_text())["selected"]] == ids
    grid, curve = tmp_path / "grid.png", tmp_path / "curve.png"
    assert invedge("select", gallery, "--count", 5, "--grid", grid, "--curve", curve) == 0
    assert Image.open(grid).size[0] > 0 and Image.open(curve).format == "PNG"
    out = capsys.readouterr()
    assert ids[0] in out.out and "selected 5 of 60 items" in out.err


def test_json_on_stdout_is_the_result(gallery, capsys):
    assert invedge("select", gallery, "-n", 3, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 3 and result["items"] == CLASSES * PER_CLASS and len(result["selected"]) == 3


def test_already_continues_where_an_earlier_selection_stopped(gallery, tmp_path, capsys):
    first, more, six = tmp_path / "first.txt", tmp_path / "more.csv", tmp_path / "six.json"
    assert invedge("select", gallery, "--count", 3, "--out", first) == 0
    assert invedge("select", gallery, "--count", 3, "--already", first, "--out", more) == 0
    assert invedge("select", gallery, "--count", 6, "--out", six) == 0
    earlier, later = first.read_text().split(), [r["id"] for r in csv.DictReader(more.open())]
    whole = [r["id"] for r in json.loads(six.read_text())["selected"]]
    assert earlier + later == whole  # greedy: the next picks are the same, whoever made the first ones
    capsys.readouterr()
    assert invedge("select", gallery, "--count", 2, "--already", six, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["start"] == "after 6 selected before" and not {r["id"] for r in result["selected"]} & set(
        whole
    )


def test_already_with_an_unknown_id_is_one_line(gallery, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("class0/img00.png\nnot/there.png\n")
    assert invedge("select", gallery, "--count", 2, "--already", ids) == 1
    err = capsys.readouterr().err.strip()
    assert "1 ids of --already are not in" in err and "'not/there.png'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--count", "0"], "--count 0 is out of range"),
        (["--count", "3", "--out", "x.xlsx"], "must end in .txt, .csv, .json"),
        (["--count", "3", "--exclude-duplicates", "2"], "--exclude-duplicates 2 is out of range"),
        (["--count", "3", "--thumb", "5"], "--thumb 5 is out of range"),
    ],
)
def test_bad_input_is_one_line(gallery, capsys, argv, words):
    assert invedge("select", gallery, *argv) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and err.startswith("error:") and len(err.splitlines()) == 1


@pytest.fixture
def gallery(tmp_path) -> Path:
    return coloured_gallery(tmp_path)


def test_a_grid_draws_at_most_grid_max_tiles_and_says_so(monkeypatch, tmp_path):
    from invspread_edge_runtime.explore import ranked

    monkeypatch.setattr(ranked, "GRID_MAX", 3)
    names = [f"img{n}.png" for n in range(25)]
    capped = ranked.ranked_grid([""] * 25, names, names, tmp_path / "capped.png", 32)
    three = ranked.ranked_grid([""] * 3, names[:3], names[:3], tmp_path / "three.png", 32)
    with Image.open(capped) as big, Image.open(three) as small:
        assert big.size == small.size  # one row of three tiles, not three rows
    assert ranked.grid_note(3) is None
    assert ranked.grid_note(25) == "--grid draws the first 3 of the 25 items (--out lists them all)"
