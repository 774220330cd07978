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
    # batches of 7 against one batch of 20: the CPU's kernels may sum in another order for another
    # batch size (float32, ~1e-6 relative per layer); unit vectors agree far closer than 1e-4
    assert np.allclose(got.vectors, want, atol=1e-4)
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
    assert 0.1 < knn["knn_accuracy"] <= 1
    # 300 memory images of 10 classes: k = 200 would reach into every class; 30 per class
    assert knn["k"] == 30 and knn["k_requested"] == 200
    full = evaluate.evaluate_run(str(tiny_run), "fashion-mnist", "knn", limit=3000)
    assert full["k"] == 200 and "k_requested" not in full
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


def _clusters(per_class, classes=4, dim=16, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    return evaluate.Embedded((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, 0)


def _near_collapsed(per_class=10, classes=4):
    """An early embedding: every cosine above 0.99, yet each image's nearest are its own class."""
    rng = np.random.default_rng(0)
    base, centers = rng.normal(size=16), rng.normal(size=(classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    x = 10 * base + 0.3 * centers[labels] + 0.02 * rng.normal(size=(len(labels), 16))
    return evaluate.Embedded((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, 0)


def test_knn_on_a_set_smaller_than_k_clamps_k_and_warns(capsys):
    """40 images of 4 classes: leave-one-out with k = 200 used to vote over all 39 others, where the
    query's own class is one image short: 0 % for an embedding whose neighbours are all right."""
    items = _near_collapsed()
    raw = accuracy.knn_predict(items.vectors, items.labels, items.vectors, 200, exclude_self=True)
    assert (raw == items.labels).mean() == 0.0  # the trap: a global vote against one's own class
    assert evaluate.knn_k(items.labels, 200, exclude_self=True) == 9
    assert evaluate.knn_leave_one_out(items) == 1.0
    err = capsys.readouterr().err
    assert "k = 200 is more than the 10 images per class" in err and "using k = 9" in err
    assert evaluate.knn_leave_one_out(items, warn=False) == 1.0 and capsys.readouterr().err == ""
    memory, queries = _clusters(10, seed=1), _clusters(5, seed=1)
    assert evaluate.knn_split(memory, queries) == 1.0 and "using k = 10" in capsys.readouterr().err
    big = _clusters(60)
    assert evaluate.knn_k(big.labels, 50) == 50  # enough images: k as asked, no warning


def test_metrics_refuse_sets_where_they_mean_nothing():
    one_class = evaluate.Embedded(_clusters(10).vectors[:10], np.zeros(10, dtype=np.int64), 0)
    with pytest.raises(DataError, match="at least two classes"):
        evaluate.knn_leave_one_out(one_class)
    with pytest.raises(DataError, match="at least two classes"):
        evaluate.retrieval(one_class)
    few = _clusters(2)  # 8 images: every other image is among the 8 nearest
    with pytest.raises(DataError, match="more than 8 images"):
        evaluate.retrieval(few)
    with pytest.raises(InvedgeError, match="k >= 1"):
        evaluate.knn_leave_one_out(_clusters(10), k=0)


def test_eval_without_data_uses_the_data_the_checkpoint_was_trained_on(tiny_run, image_folder, tmp_path):
    """No run.json, no --data: the checkpoint's own config says the run trained on a folder."""
    from tiny import tiny_config

    from invspread_edge.checkpoint import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(
        run / "checkpoint.safetensors",
        build_model(load_checkpoint(tiny_run)),
        tiny_config(data=str(image_folder)),
        epoch=1,
        step=1,
    )
    r = evaluate.evaluate_run(str(run), None, "knn")
    assert r["data"] == str(image_folder) and r["mode"] == "leave-one-out" and r["queries"] == 40
    assert evaluate.evaluate_run(None, None, "knn", baseline="pixels", limit=300)["data"] == "fashion-mnist"

    gone = tmp_path / "gone"
    save_checkpoint(gone / "checkpoint.safetensors", build_model(load_checkpoint(tiny_run)),
                    tiny_config(data=str(tmp_path / "moved_away")), epoch=1, step=1)  # fmt: skip
    with pytest.raises(DataError, match=r"was trained on .*moved_away.* cannot be opened") as info:
        evaluate.evaluate_run(str(gone), None, "knn")
    assert "--data" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(batch_size=0), "--batch must be at least 1"),
        (dict(workers=-1), "--workers must be >= 0"),
        (dict(k=0), "--k must be at least 1"),
        (dict(limit=0), "--limit must be at least 1"),
        (dict(baseline="untrained", run=None, width=0), "--width must be at least 1"),
    ],
)
def test_bad_values_are_config_errors(tiny_run, kwargs, match):
    from invspread_edge_runtime.errors import ConfigError

    args = dict(run=str(tiny_run), data="fashion-mnist", limit=10)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        evaluate.evaluate_run(**args)
