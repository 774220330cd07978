"""Evaluation: the runtime's transform and metrics, the protocols, the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invspread_edge import evaluate
from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge.data import UInt8Source
from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.evaluation.datasets import open_dataset
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
    pixels = evaluate.evaluate_pixels("fashion-mnist", "knn", limit=500)
    assert pixels["evaluated"] == "raw pixels" and 0.5 < pixels["knn_accuracy"] < 1
    centred = evaluate.evaluate_pixels("fashion-mnist", "knn", limit=500, normalized=True)
    assert centred["evaluated"].startswith("normalised pixels")
    assert centred["knn_accuracy"] != pixels["knn_accuracy"]
    untrained = evaluate.evaluate_untrained("fashion-mnist", "knn", limit=300, run=str(tiny_run))
    assert untrained["evaluated"].startswith("untrained") and untrained["checkpoint_sha256"] is None
    alone = evaluate.evaluate_untrained("fashion-mnist", "knn", limit=300, width=8)
    assert "width 8" in alone["evaluated"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(protocol="map"), "Only knn, retrieval"),
    ],
)
def test_bad_options(tiny_run, kwargs, match):
    args = dict(run=str(tiny_run), data="fashion-mnist", limit=10)
    args.update(kwargs)
    with pytest.raises(InvedgeError, match=match):
        evaluate.evaluate_run(**args)


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
    assert evaluate.evaluate_pixels(None, "knn", limit=300)["data"] == "fashion-mnist"

    gone = tmp_path / "gone"
    save_checkpoint(gone / "checkpoint.safetensors", build_model(load_checkpoint(tiny_run)),
                    tiny_config(data=str(tmp_path / "moved_away")), epoch=1, step=1)  # fmt: skip
    with pytest.raises(DataError, match=r"was trained on .*moved_away.* cannot be opened") as info:
        evaluate.evaluate_run(str(gone), None, "knn")
    assert "--data" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(batch_size=0), "--batch 0 is out of range. Use 1 to 1024"),
        (dict(batch_size=100_000), "--batch 100000 is out of range"),
        (dict(workers=-1), "--workers -1 is out of range"),
        (dict(workers=100_000), "--workers 100000 is out of range. Use 0 to 256"),
        (dict(k=0), "--k 0 is out of range"),
        (dict(k=10**9), "--k 1000000000 is out of range. Use 1 to 10000"),
        (dict(limit=0), "--limit 0 is out of range"),
        (dict(limit=10**30), "--limit 1000000000000000000000000000000 is out of range"),
        (dict(baseline="untrained", run=None, width=0), "--width 0 is out of range"),
        (dict(baseline="untrained", run=None, width=100_000), "--width 100000 is out of range. Use 1 to 256"),
    ],
)
def test_bad_values_are_config_errors(tiny_run, kwargs, match):
    from invspread_edge_runtime.errors import ConfigError

    args = dict(run=str(tiny_run), data="fashion-mnist", limit=10)
    args.update(kwargs)
    mode = evaluate.evaluate_untrained if args.pop("baseline", None) else evaluate.evaluate_run
    with pytest.raises(ConfigError, match=match):
        mode(**args)
