"""Evaluation: the runtime's transform and metrics, the protocols, the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invspread_edge import evaluate
from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge.data import UInt8Source
from invspread_edge_runtime import accuracy
from invspread_edge_runtime.datasets import open_dataset
from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.preprocess import normalize


def test_embed_uses_the_runtime_transform(tiny_run, fmnist_test):
    ckpt = load_checkpoint(tiny_run)
    model = build_model(ckpt)
    cfg = ckpt.config
    sub = fmnist_test.subset(range(20))
    got = evaluate.embed(
        model, UInt8Source(sub, 28), cfg["mean"], cfg["std"], torch.device("cpu"), batch_size=7
    )
    x = torch.from_numpy(normalize(sub.images, cfg["mean"], cfg["std"]))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.allclose(got.vectors, want, atol=1e-5)
    assert np.array_equal(got.labels, sub.labels) and got.failed == 0
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1, atol=1e-5)


def test_embed_leaves_out_unreadable_files(tiny_run, image_folder, tmp_path):
    for p in sorted(image_folder.rglob("*.png"))[:6]:
        (tmp_path / p.parent.name).mkdir(exist_ok=True)
        (tmp_path / p.parent.name / p.name).write_bytes(p.read_bytes())
    (tmp_path / "class0" / "broken.png").write_bytes(b"nope")
    images = open_dataset(str(tmp_path))
    model = build_model(load_checkpoint(tiny_run))
    got = evaluate.embed(
        model, UInt8Source(images, 28, workers=0), (0.3,) * 3, (0.3,) * 3, torch.device("cpu")
    )
    assert got.vectors.shape == (6, 32) and got.failed == 1 and len(got.labels) == 6


def test_protocols_match_the_runtime_metrics():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    labels = np.repeat(np.arange(3), 40)
    x = centers[labels] + 0.3 * rng.normal(size=(120, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    items = evaluate.Embedded(x, labels, 0)
    memory, queries = evaluate.Embedded(x[::2], labels[::2], 0), evaluate.Embedded(x[1::2], labels[1::2], 0)
    assert evaluate.knn_split(memory, queries, k=10) == accuracy.knn_accuracy(
        x[::2], labels[::2], x[1::2], labels[1::2], k=10
    )
    loo = evaluate.knn_leave_one_out(items, k=10)
    assert loo > 0.9
    r = evaluate.retrieval(items)
    assert set(r) == {"recall@1", "recall@2", "recall@4", "recall@8", "nmi"}
    assert r["recall@1"] <= r["recall@2"] <= r["recall@4"] <= r["recall@8"] and 0 < r["nmi"] <= 1


def test_metrics_need_labels():
    items = evaluate.Embedded(np.eye(3, dtype=np.float32), None, 0)
    with pytest.raises(DataError, match="sub-folder per class"):
        evaluate.retrieval(items)
    with pytest.raises(DataError, match="needs labels"):
        evaluate.knn_leave_one_out(items)


def test_evaluate_run_knn_and_retrieval(tiny_run):
    knn = evaluate.evaluate_run(str(tiny_run), "fashion-mnist", "knn", limit=300)
    assert knn["protocol"] == "knn" and knn["memory"] == 300 and knn["queries"] == 300
    assert 0.1 < knn["knn_accuracy"] <= 1 and knn["k"] == 200
    assert knn["checkpoint_sha256"] == load_checkpoint(tiny_run).sha256
    ret = evaluate.evaluate_run(str(tiny_run), "fashion-mnist", "retrieval", classes="5-9", limit=200)
    assert ret["queries"] == 200 and 0 < ret["recall@1"] <= ret["recall@8"] <= 1 and 0 <= ret["nmi"] <= 1


def test_folder_is_leave_one_out(tiny_run, image_folder):
    r = evaluate.evaluate_run(str(tiny_run), str(image_folder), "knn")
    assert r["mode"] == "leave-one-out" and r["queries"] == 40 and "memory" not in r


def test_baselines_by_the_same_code(tiny_run):
    pixels = evaluate.evaluate_run(None, "fashion-mnist", "knn", limit=500, baseline="pixels")
    assert pixels["evaluated"] == "raw pixels" and 0.5 < pixels["knn_accuracy"] < 1
    centred = evaluate.evaluate_run(None, "fashion-mnist", "knn", limit=500, baseline="pixels-normalized")
    assert centred["evaluated"].startswith("normalised pixels")
    assert centred["knn_accuracy"] != pixels["knn_accuracy"]
    untrained = evaluate.evaluate_run(str(tiny_run), "fashion-mnist", "knn", limit=300, baseline="untrained")
    assert untrained["evaluated"].startswith("untrained") and untrained["checkpoint_sha256"] is None
    alone = evaluate.evaluate_run(None, "fashion-mnist", "knn", limit=300, baseline="untrained", width=8)
    assert "width 8" in alone["evaluated"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(protocol="map"), "Only knn, retrieval"),
        (dict(baseline="random"), "Only pixels, pixels-normalized, untrained"),
        (dict(run=None), "nothing to evaluate"),
    ],
)
def test_bad_options(tiny_run, kwargs, match):
    args = dict(run=str(tiny_run), data="fashion-mnist", limit=10)
    args.update(kwargs)
    with pytest.raises(InvedgeError, match=match):
        evaluate.evaluate_run(**args)
