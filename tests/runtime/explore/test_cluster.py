"""`invedge cluster`: k-means with k by silhouette, HDBSCAN with noise, the files, sheets and links."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invspread_edge_runtime.errors import ConfigError, EmptyGalleryError, InvedgeError
from invspread_edge_runtime.explore import cluster as cl
from invspread_edge_runtime.explore.cluster import ClusterOptions, cluster_items, parse_k, silhouette
from invspread_edge_runtime.explore.cluster_files import read_assignments, write_cluster_folder
from invspread_edge_runtime.explore.links import link_clusters
from invspread_edge_runtime.files import FOLDER_MARKER


@dataclass
class Items:
    """Shaped as explore.items.ExploreItems: what the clustering reads."""

    vectors: np.ndarray
    ids: list[str]
    locations: list[str]
    source: str = "test.emb"
    classes: list[str] | None = None
    space: dict = field(default_factory=dict)
    kind: str = "embeddings"
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> list[str] | None:
        return self.classes


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(
    k: int = 4, per: int = 30, d: int = 16, spread: float = 0.15, seed: int = 0, root: Path | None = None
):
    """Items in `k` tight groups around random directions; labelled by group (class folders c0…)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), per)
    x = unit(rng.normal(size=(k, d))[truth] + spread * rng.normal(size=(k * per, d)))
    ids = [f"c{t}/img{i:03d}.png" for i, t in enumerate(truth)]
    locations = [str(root / item) if root else "" for item in ids]
    return Items(x, ids, locations, classes=[f"c{t}" for t in truth], root=root), truth


@pytest.mark.parametrize("seed", range(3))
def test_silhouette_matches_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    x = unit(rng.normal(size=(150, 8)))
    labels = rng.integers(0, 5, 150)
    labels[0] = 7  # a cluster of one item scores 0
    assert silhouette(x, labels) == pytest.approx(
        metrics.silhouette_score(x, labels, metric="cosine"), abs=1e-5
    )
    labels[:20] = -1  # noise is left out
    keep = labels >= 0
    want = metrics.silhouette_score(x[keep], labels[keep], metric="cosine")
    assert silhouette(x, labels) == pytest.approx(want, abs=1e-5)
    assert silhouette(x, np.zeros(150, int)) == 0.0


def test_k_auto_finds_the_planted_groups_and_says_how():
    items, _ = blobs(k=4)
    found = cluster_items(items, ClusterOptions(k_max=8))
    assert found.k == 4 and sorted(found.sizes) == [30] * 4
    assert set(found.k_scores) == set(range(2, 9))
    assert max(found.k_scores, key=found.k_scores.get) == 4
    assert "silhouette" in found.criterion and "k = 2..8" in found.criterion
    assert found.nmi == pytest.approx(1.0) and found.ari == pytest.approx(1.0) and found.classes == 4
    as_json = json.loads(json.dumps(found.to_dict()))
    assert as_json["k"] == 4 and as_json["nmi"] == pytest.approx(1.0)
    assert [s["k"] for s in as_json["k_scores"]] == list(range(2, 9))
    assert as_json["assignments"][items.ids[0]] == int(found.assignments[0])


def test_given_k_numbers_clusters_by_size_and_orders_members_by_closeness():
    rng = np.random.default_rng(1)
    sizes = [50, 20, 35]
    truth = np.repeat(np.arange(3), sizes)
    x = unit(rng.normal(size=(3, 16))[truth] + 0.1 * rng.normal(size=(len(truth), 16)))
    items = Items(x, [f"i{n}" for n in range(len(x))], [""] * len(x))
    found = cluster_items(items, ClusterOptions(k=3, seed=5))
    assert found.sizes == [50, 35, 20] and found.noise == 0 and found.nmi is None
    for c in range(3):
        members = found.members(c)
        closeness = x[members] @ found.centres[c]
        assert np.all(np.diff(closeness) <= 1e-6)  # the most typical first
        np.testing.assert_allclose(found.closeness[members], closeness, atol=1e-5)
    nearest = np.argmax(x @ found.centres.T, axis=1)
    assert np.array_equal(nearest, found.assignments)
    again = cluster_items(items, ClusterOptions(k=3, seed=5))
    assert np.array_equal(again.assignments, found.assignments)  # seeded: the same clusters


def test_without_faiss_the_numpy_kmeans_finds_the_same_groups(monkeypatch):
    import invspread_edge_runtime.index.faiss_engines as engines

    items, _ = blobs(k=3, per=20)
    with_faiss = cluster_items(items, ClusterOptions(k=3))
    monkeypatch.setattr(engines, "faiss_module", lambda: None)
    without = cluster_items(items, ClusterOptions(k=3))
    assert without.nmi == pytest.approx(1.0)
    assert np.array_equal(without.assignments, with_faiss.assignments)  # both numbered by size, then row


def test_kmeans_trains_on_a_sample_and_assigns_every_item(monkeypatch):
    monkeypatch.setattr(cl, "TRAIN_PER_CENTRE", 10)
    monkeypatch.setattr(cl, "BLOCK", 64)  # several blocks
    items, _ = blobs(k=3, per=100)
    seen = []

    def progress(total, what):
        import contextlib

        return contextlib.nullcontext(lambda done, total: seen.append((done, total)))

    found = cluster_items(items, ClusterOptions(k=3), progress=progress)
    assert found.nmi == pytest.approx(1.0) and len(found) == 300
    assert seen[-1] == (300, 300) and len(seen) == 5


def test_hdbscan_leaves_scattered_items_as_noise():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(9)
    axis = np.eye(16)[0]
    centres = unit(axis + 0.12 * rng.normal(size=(3, 16)))  # three groups in one cone: split early
    truth = np.repeat(np.arange(3), 40)
    grouped = unit(centres[truth] + 0.01 * rng.normal(size=(120, 16)))
    scattered = np.eye(16, dtype=np.float32)[6:]  # ten items as far from each other as from the groups
    items = Items(
        np.concatenate([grouped, scattered]),
        [f"c{t}/{n}.png" for n, t in enumerate(truth)] + [f"odd/{n}.png" for n in range(10)],
        [""] * 130,
        classes=[f"c{t}" for t in truth] + ["odd"] * 10,
    )
    found = cluster_items(items, ClusterOptions(method="hdbscan", min_cluster_size=5))
    assert found.k == 3 and found.sizes == [40, 40, 40]
    assert found.noise == 10 and set(found.assignments[120:]) == {-1}
    assert list(found.members(-1)) == list(range(120, 130))
    assert found.nmi == pytest.approx(1.0)  # over the items with a cluster
    assert "noise" in found.criterion and found.to_dict()["noise"] == 10


def test_bad_options_and_too_few_items_are_one_clear_error():
    with pytest.raises(ConfigError, match="not a number"):
        parse_k("twenty")
    assert parse_k("AUTO") is None and parse_k("12") == 12
    with pytest.raises(ConfigError, match="Only kmeans, hdbscan"):
        ClusterOptions(method="dbscan")
    with pytest.raises(ConfigError, match="--k 1 is out of range"):
        ClusterOptions(k=1)
    with pytest.raises(ConfigError, match="--k-max 2 is out of range"):
        ClusterOptions(k_max=2)
    with pytest.raises(ConfigError, match="hdbscan finds the number"):
        ClusterOptions(k=5, method="hdbscan")
    items, _ = blobs(k=2, per=3)
    with pytest.raises(ConfigError, match=r"--k 10 needs at least 10 items; test\.emb holds 6"):
        cluster_items(items, ClusterOptions(k=10))
    with pytest.raises(ConfigError, match="--min-cluster-size 7 needs at least 7 items"):
        cluster_items(items, ClusterOptions(method="hdbscan", min_cluster_size=7))
    with pytest.raises(ConfigError, match="--k auto needs at least 3 items"):
        cluster_items(Items(items.vectors[:2], items.ids[:2], items.locations[:2]))
    with pytest.raises(EmptyGalleryError, match="holds no items"):
        cluster_items(Items(np.zeros((0, 4), np.float32), [], []))


def test_k_auto_on_few_items_tries_only_the_ks_that_fit():
    items, _ = blobs(k=2, per=3)
    found = cluster_items(items, ClusterOptions())
    assert max(found.k_scores) == 5 and found.k == 2


@pytest.fixture
def pictured(tmp_path):
    """Blobs whose items are real image files (one colour per group; one missing file)."""
    root = tmp_path / "photos"
    items, truth = blobs(k=3, per=6, root=root)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for item, t in zip(items.ids, truth, strict=True):
        (root / item).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), colours[t]).save(root / item)
    os.unlink(items.locations[5])
    items.locations[7] = ""  # an item whose image is not known
    return items, truth


def test_out_folder_holds_assignments_json_and_a_sheet_per_cluster(pictured, tmp_path):
    items, _ = pictured
    found = cluster_items(items, ClusterOptions(k=3))
    out = tmp_path / "clusters"
    files = write_cluster_folder(found, out, per_sheet=4, thumb=32)
    assert sorted(p.name for p in out.iterdir()) == [
        FOLDER_MARKER,  # what wrote it: --overwrite replaces only such a folder
        "assignments.csv",
        "clusters.json",
        "sheets",
        "summary.png",
    ]
    assert sorted(p.name for p in (out / "sheets").iterdir()) == [f"cluster_00{c}.png" for c in range(3)]
    assert files["sheets"]["0"] == "sheets/cluster_000.png"
    with Image.open(out / "sheets" / "cluster_000.png") as sheet:
        assert sheet.size[0] > 4 * 32 and sheet.size[0] < 5 * 48  # four tiles in a row
    with open(out / "assignments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == items.ids and {int(r["cluster"]) for r in rows} == {0, 1, 2}
    stored = json.loads((out / "clusters.json").read_text())
    assert stored["files"]["summary"] == "summary.png" and stored["k"] == 3
    assert read_assignments(out) == read_assignments(out / "assignments.csv") == stored["assignments"]
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == [".clusters.lock"]  # no staging left behind (the lock file stays, as every lock's)


def test_an_existing_folder_is_refused_unless_an_earlier_output_and_overwrite(pictured, tmp_path):
    items, _ = pictured
    found = cluster_items(items, ClusterOptions(k=2))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InvedgeError, match="already exists and is not empty"):
        write_cluster_folder(found, mine)
    with pytest.raises(InvedgeError, match="not an earlier output"):
        write_cluster_folder(found, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    (mine / "clusters.json").write_text("{}")  # looks like an output, but invedge did not write it
    with pytest.raises(InvedgeError, match="not an earlier output"):
        write_cluster_folder(found, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    write_cluster_folder(found, out)
    with pytest.raises(InvedgeError, match="already exists"):
        write_cluster_folder(found, out)
    write_cluster_folder(cluster_items(items, ClusterOptions(k=3)), out, overwrite=True)
    assert json.loads((out / "clusters.json").read_text())["k"] == 3


def test_link_folders_hold_relative_links_to_each_clusters_images(pictured, tmp_path):
    items, _ = pictured
    items.locations[1] = items.locations[0].replace("img000", "x/img000")  # a name two images share
    Path(items.locations[1]).parent.mkdir()
    Image.new("RGB", (8, 8)).save(items.locations[1])
    found = cluster_items(items, ClusterOptions(k=3))
    target = tmp_path / "by_cluster"
    links = link_clusters(found, target)
    assert links.linked == 16 and links.missing == 2  # no link to an unknown or deleted image
    assert sorted(p.name for p in target.iterdir()) == [
        FOLDER_MARKER,
        "cluster_000",
        "cluster_001",
        "cluster_002",
    ]
    first = target / f"cluster_00{found.assignments[0]}"
    assert sorted(p.name for p in first.iterdir())[:2] == ["img000.png", "img000_2.png"]
    for link in target.glob("*/*"):
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    for row in (0, 2, 3):
        assert (target / f"cluster_00{found.assignments[row]}" / Path(items.ids[row]).name).resolve() == Path(
            items.locations[row]
        ).resolve()
    with pytest.raises(InvedgeError, match="already exists and is not empty"):
        link_clusters(found, target)


# --- the verb ----------------------------------------------------------------------------------------


def invedge(capsys, *argv) -> tuple[int, str, str]:
    from invspread_edge_runtime.cli import create_app, run

    capsys.readouterr()
    code = run(create_app(), [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def gallery(pictured, tmp_path):
    """`pictured` as an embeddings folder (invedge embed's layout) rooted at its images' folder."""
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    items, _ = pictured
    dim = items.vectors.shape[1]
    space = {"space_id": f"00/{dim}", "checkpoint_sha256": "00" * 32, "embedding_dim": dim}
    out = tmp_path / "photos.emb"
    writer = EmbeddingWriter(out, space=space, model={"sha256": "aa" * 32}, root=tmp_path / "photos")
    writer.add(items.ids, items.vectors)
    writer.finish()
    return out, items


def test_cli_clusters_writes_links_and_prints_json(capsys, gallery, tmp_path):
    path, items = gallery
    out, links = tmp_path / "clusters", tmp_path / "by_cluster"
    code, stdout, err = invedge(
        capsys, "cluster", path, "--k", "3", "--out", out, "--link-to", links, "--json"
    )
    assert code == 0, err
    found = json.loads(stdout)
    assert found["k"] == 3 and found["classes"] == 3 and found["nmi"] == pytest.approx(1.0)
    assert set(found["assignments"]) == set(items.ids)
    assert found["written"]["links"]["linked"] == 17 and (out / "summary.png").is_file()
    assert read_assignments(out / "clusters.json") == found["assignments"]
    code, stdout, err = invedge(capsys, "cluster", path, "--k-max", "4")
    assert code == 0, err
    assert "silhouette" in err + stdout and "NMI 1.000, ARI 1.000" in (err + stdout).replace("\n", " ")


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--k", "40"], ["--k 40 needs at least 40 items", "holds 18", "Use a smaller --k"]),
        (["--k", "x"], ["--k 'x' is not a number"]),
        (["--method", "hdbscan", "--k", "3"], ["hdbscan finds the number of clusters itself"]),
        (["--per-sheet", "0"], ["--per-sheet 0 is out of range"]),
        (["--out", "{existing}"], ["already exists and is not empty", "new folder"]),
        (["--link-to", "{existing}"], ["--link-to", "already exists and is not empty"]),
    ],
    ids=["k-above-count", "k-not-a-number", "hdbscan-with-k", "per-sheet", "out-exists", "link-to-exists"],
)
def test_cli_bad_input_is_one_line(capsys, gallery, tmp_path, flags, fragments):
    path, _ = gallery
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = invedge(capsys, "cluster", path, *[f.format(existing=existing) for f in flags])
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err.replace("\n", " "), err
    assert (existing / "keep.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1


def test_cli_clusters_an_index_file_as_its_embeddings(capsys, gallery, tmp_path):
    from invspread_edge_runtime.index.manage import IndexBuildOptions, create_gallery

    path, _ = gallery
    index = tmp_path / "photos.index"
    create_gallery(IndexBuildOptions(path, out=index))
    runs = [invedge(capsys, "cluster", each, "--k", "3", "--json") for each in (path, index)]
    assert [code for code, _, _ in runs] == [0, 0], runs
    from_folder, from_index = (json.loads(stdout) for _, stdout, _ in runs)
    assert from_index["assignments"] == from_folder["assignments"]
    assert from_index["nmi"] == pytest.approx(1.0)  # class folders found under the index's locations
