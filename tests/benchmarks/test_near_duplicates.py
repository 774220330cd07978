"""benchmarks/near_duplicates.py: its pair scoring on hand-made cases (the definition the figures rest
on), its alterations, and one toy run end to end so that it cannot rot. The figures themselves are
not checked: they are the model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from script_loading import load_script
from tiny import REPO

pytest.importorskip("imagehash", reason="the pHash baseline needs imagehash (the dev extra)")
bench = load_script(REPO / "benchmarks" / "near_duplicates.py")


def planted_by_hand():
    """Originals 0, 1, 2; copies: 3 = jpeg60 of 0, 4 = hflip of 0, 5 = jpeg60 of 1."""
    images = [Image.new("L", (8, 8), v) for v in (0, 50, 100, 0, 0, 50)]
    return bench.Planted(
        images,
        np.array([0, 1, 2, 0, 0, 1]),
        np.array(["", "", "", "jpeg60", "hflip", "jpeg60"]),
    )


def test_pairs_are_scored_on_the_originals_plus_the_rows_copies():
    planted = planted_by_hand()
    # found: (0,3) true, (1,5) true, (0,1) between two originals, (2,3) wrong, (0,4) true hflip, (3,4) true
    found = bench.Candidates(
        np.array([0, 1, 0, 2, 0, 3]),
        np.array([3, 5, 1, 3, 4, 4]),
        np.array([0.99, 0.97, 0.96, 0.90, 0.98, 0.985], np.float32),
        higher_is_closer=True,
    )
    jpeg = found.score(planted, ("jpeg60",), 0.95)
    assert (jpeg["found"], jpeg["true_found"], jpeg["true_pairs"]) == (3, 2, 2)  # (0,1) counts as wrong
    assert jpeg["precision"] == pytest.approx(2 / 3, abs=1e-4) and jpeg["recall"] == 1.0
    assert jpeg["between_originals"] == 1 and jpeg["planted_precision"] == 1.0
    flip = found.score(planted, ("hflip",), 0.95)
    assert (flip["found"], flip["true_found"], flip["true_pairs"]) == (2, 1, 1)
    both = found.score(planted, ("jpeg60", "hflip"), 0.95)  # group of 0 has 3 items: 3 true pairs
    assert (both["true_pairs"], both["true_found"], both["found"]) == (4, 4, 5)
    assert found.score(planted, ("jpeg60",), 0.92)["found"] == 3  # (2,3) at 0.90 stays out
    assert found.best_f1(planted, ("jpeg60",)) == pytest.approx(0.97)
    pairs = found.between_originals(planted, 0.95)
    assert pairs == [(0, 1, pytest.approx(0.96))]
    assert bench.near_identical(planted, pairs) == 0  # 0 and 50 of 255 are not one picture


def test_hamming_pairs_and_their_scoring_keep_the_smaller_distances():
    hashes = np.array([0b0, 0b1, 0b111, 0xFFFF], np.uint64)
    i, j, d = bench.hamming_pairs(hashes, 3, block=2)
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == [
        (0, 1, 1.0),
        (0, 2, 3.0),
        (1, 2, 2.0),
    ]
    found = bench.Candidates(i, j, d, higher_is_closer=False)
    assert found.kept(2).tolist() == [d <= 2 for d in d.tolist()]


def test_alterations_keep_the_size_and_change_the_picture():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    for alteration in bench.ALTERATIONS:
        copy = bench.alter(img, alteration, np.random.default_rng(1))
        assert copy.size == img.size and copy.mode == img.mode
        assert not np.array_equal(np.asarray(copy), np.asarray(img)), alteration
    moved = np.asarray(bench.shifted(img, 0, 1))
    a = np.asarray(img)
    assert np.array_equal(moved[:, 1:], a[:, :-1]) and np.array_equal(moved[:, 0], a[:, 0])
    same = bench.phash([img, img.copy(), bench.alter(img, "hflip", rng)])
    assert same[0] == same[1] and same[0] != same[2]


def test_nearest_hits_count_a_copy_whose_original_is_strictly_nearest():
    planted = planted_by_hand()
    vectors = np.eye(6, dtype=np.float32)
    vectors[3] = vectors[0]  # 3 sits on its original; 5 is nearer to 2 than to its original 1
    vectors[5] = np.array([0, 0.5, 0.8, 0, 0, 0], np.float32)
    hits = bench.nearest_hits(planted, lambda rows: vectors[rows] @ vectors.T)
    assert hits == {"jpeg60": 0.5, "hflip": 0.0}


def test_toy_run_writes_its_figures(tiny_export, tmp_path):
    out = tmp_path / "nd"
    argv = ["--model", str(tiny_export), "--limit", "300", "--originals", "30", "--colour-images", "15",
            "--colour-size", "48", "--json", str(out / "n.json"), "--md", str(out / "n.md"),
            "--pairs-png", str(out / "pairs.png")]  # fmt: skip
    assert bench.main(argv) == 0
    report = json.loads((out / "n.json").read_text())
    assert report["format"] == "invspread-edge/near-duplicates/1"
    fmnist = report["sets"]["fashion-mnist"]
    assert fmnist["items"] == 300 + 5 * 30 and fmnist["copies_per_alteration"] == 30
    assert report["sets"]["colour"]["items"] == 15 + 5 * 5
    given = fmnist["settings"]["ours, given"]
    assert given["threshold"] == 0.95 and given["groups"]["groups"] >= 1
    rows = given["rows"]
    assert rows["jpeg60"]["true_pairs"] == 30 and rows["first four"]["true_pairs"] == 30 * 10
    assert rows["all five"]["true_pairs"] == 30 * 15
    for setting in fmnist["settings"].values():  # each row's figures are its own counts
        for row in setting["rows"].values():
            assert row["true_found"] <= min(row["found"], row["true_pairs"])
            assert row["recall"] == pytest.approx(row["true_found"] / row["true_pairs"], abs=1e-4)
            if row["found"]:
                assert row["precision"] == pytest.approx(row["true_found"] / row["found"], abs=1e-4)
    phash = fmnist["settings"]["pHash, best F1"]["rows"]  # pHash keeps JPEG and brightness copies
    assert phash["jpeg60"]["recall"] >= 0.9 and phash["bright15"]["recall"] >= 0.9
    assert set(fmnist["original_nearest"]["phash"]) == set(bench.ALTERATIONS)
    assert report["nmi"]["pixels"] > 0.3  # k-means on raw pixels does find the classes in part
    md = (out / "n.md").read_text()
    assert "A true\npair is two items made from one original" in md and "### targets" in md
    assert len(report["targets"]) == 9
    between = (
        given["between_originals"]["pairs"] + fmnist["settings"]["pHash, given"]["between_originals"]["pairs"]
    )
    assert (out / "pairs.png").is_file() == (between > 0)
