"""The training loop on tiny real runs: run folder, determinism, exact resume, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from invspread_edge import train as train_mod
from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge.train import TrainConfig, learning_rate, train
from invspread_edge_runtime.errors import DataError, InvedgeError


def tiny(out, **overrides) -> TrainConfig:
    cfg = dict(
        data="fashion-mnist",
        out=str(out),
        width=8,
        embedding_dim=32,
        limit=256,
        batch_size=32,
        epochs=2,
        precision="fp32",
        workers=0,
        eval_memory=300,
        eval_queries=100,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class StopAfter(train_mod.StopFlag):
    """Stands in for a Ctrl-C: the loop sees the stop flag raised after `checks` looks at it."""

    checks = 0

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    @property
    def set(self) -> bool:  # type: ignore[override]
        self.seen += 1
        return self.seen > self.checks

    @set.setter
    def set(self, value: bool) -> None:
        pass


def test_step_schedule_scales_the_recipe():
    assert learning_rate(0.03, 0.0) == 0.03
    assert learning_rate(0.03, 0.59) == 0.03
    assert learning_rate(0.03, 0.6) == pytest.approx(0.003)
    assert learning_rate(0.03, 0.79) == pytest.approx(0.003)
    assert learning_rate(0.03, 0.8) == pytest.approx(0.0015)
    assert learning_rate(0.03, 0.999) == pytest.approx(0.0015)
    assert learning_rate(0.03, 0.5, "cosine") == pytest.approx(0.015)
    with pytest.raises(InvedgeError, match="Only step, cosine, constant"):
        learning_rate(0.03, 0.5, "linear")


def test_run_folder_holds_everything_a_run_needs(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(run), show_progress=False)
    assert result.epochs_done == 2 and result.steps == 16 and not result.interrupted
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["loss"] > 0 and m["images_per_s"] > 0 and 0 <= m["knn_accuracy"] <= 1
    assert metrics[0]["lr"] == pytest.approx(0.03) and metrics[1]["lr"] == pytest.approx(0.0015)

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epoch"] == 2
    assert info["preprocessing"]["image_size"] == 28
    assert info["preprocessing"]["mean"][0] == pytest.approx(0.286, abs=0.02)  # this subset's statistics
    assert info["data"]["images"] == 256 and len(info["data"]["fingerprint"]) == 64
    assert info["versions"]["torch"] == torch.__version__
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"

    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 2 and ckpt.step == 16
    for key in ("arch", "width", "embedding_dim", "image_size", "mean", "std", "data"):
        assert key in ckpt.config
    assert ckpt.optimizer_state is not None and ckpt.optimizer_state["state"]
    model = build_model(ckpt)
    z = model(torch.zeros(2, 3, 28, 28))
    assert z.shape == (2, 32)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = train(tiny(tmp_path / "a", epochs=1, eval_every=0), show_progress=False)
    b = train(tiny(tmp_path / "b", epochs=1, eval_every=0), show_progress=False)
    c = train(tiny(tmp_path / "c", epochs=1, eval_every=0, seed=1), show_progress=False)
    wa, wb, wc = (load_checkpoint(r.run_dir).model_state for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.metrics[0]["loss"] == b.metrics[0]["loss"] != c.metrics[0]["loss"]


def test_resume_mid_epoch_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    full = train(tiny(tmp_path / "full"), show_progress=False)

    monkeypatch.setattr(StopAfter, "checks", 11)  # 8 steps + the epoch-end look, then 2 steps of epoch 2
    monkeypatch.setattr(train_mod, "StopFlag", StopAfter)
    cut = train(tiny(tmp_path / "cut"), show_progress=False)
    assert cut.interrupted and cut.epochs_done == 1
    ckpt = load_checkpoint(tmp_path / "cut")
    assert (ckpt.epoch, ckpt.step) == (1, 10)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(train_mod, "StopFlag", train_mod.StopFlag)
    resumed = train(TrainConfig(out=str(tmp_path / "cut")), resume=True, show_progress=False)
    assert not resumed.interrupted and resumed.epochs_done == 2
    got, want = read_metrics(tmp_path / "cut"), read_metrics(tmp_path / "full")
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-6, abs=0)
    assert [m["knn_accuracy"] for m in got] == [m["knn_accuracy"] for m in want]
    wa, wb = load_checkpoint(tmp_path / "full").model_state, load_checkpoint(tmp_path / "cut").model_state
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    assert full.metrics[-1]["step"] == resumed.metrics[-1]["step"] == 16


def test_resume_finished_run_needs_more_epochs(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    with pytest.raises(InvedgeError, match="already trained all 1 epochs"):
        train(TrainConfig(out=str(run)), resume=True, show_progress=False)
    longer = train(TrainConfig(out=str(run)), resume=True, epochs=2, show_progress=False)
    assert longer.epochs_done == 2 and [m["epoch"] for m in read_metrics(run)] == [1, 2]


def test_refuses_to_clobber_without_overwrite(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    with pytest.raises(InvedgeError, match="already holds a run"):
        train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    (run / "keep.txt").write_text("mine")
    train(tiny(run, epochs=1, eval_every=0, seed=3), overwrite=True, show_progress=False)
    assert (run / "keep.txt").read_text() == "mine"
    assert load_checkpoint(run).config["train"]["seed"] == 3


def test_classes_and_limit_choose_the_training_images(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(run, epochs=1, classes="5-9", limit=64, eval_memory=200), show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["images"] == 64 and info["data"]["classes"] == "5-9" and info["data"]["limit"] == 64
    assert result.steps == 2 and 0 <= result.metrics[0]["knn_accuracy"] <= 1  # monitor on classes 5-9


def test_folder_with_an_unreadable_file(tmp_path, image_folder):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in image_folder.rglob("*.*"):
        (folder / p.parent.name).mkdir(exist_ok=True)
        (folder / p.parent.name / p.name).write_bytes(p.read_bytes())
    (folder / "class0" / "broken.png").write_bytes(b"not an image")
    run = tmp_path / "run"
    result = train(
        tiny(run, data=str(folder), image_size=16, limit=None, batch_size=41, epochs=1), show_progress=False
    )
    assert result.skipped_images == 1
    m = read_metrics(run)[0]
    assert m["skipped_images"] == 1 and m["images"] == 40
    assert 0 <= m["knn_accuracy"] <= 1  # leave-one-out on the folder's class labels
    assert load_checkpoint(run).config["image_size"] == 16


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(limit=10), DataError, "fewer than one batch"),
        (dict(epochs=0), InvedgeError, "--epochs must be at least 1"),
        (dict(schedule="linear"), InvedgeError, "--schedule must be one of"),
        (dict(arch="vgg"), InvedgeError, "Only cifar_resnet18"),
        (dict(temperature=0.0), ValueError, "temperature must be > 0"),
        (dict(classes="9-3"), InvedgeError, "low-high"),
        (dict(sync_bn=True, device="cpu"), InvedgeError, "--sync-bn needs CUDA"),
    ],
)
def test_bad_options_say_what_is_allowed(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        train(tiny(tmp_path / "run", **overrides), show_progress=False)


def test_resume_refuses_changed_data(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny(run, epochs=2, eval_every=0), show_progress=False)
    ckpt = load_checkpoint(run)
    cfg = dict(ckpt.config)
    cfg["data_fingerprint"] = "0" * 64
    from invspread_edge.checkpoint import save_checkpoint

    save_checkpoint(run / "checkpoint.safetensors", build_model(ckpt), cfg, 1, 8)
    with pytest.raises(DataError, match="changed since the run started"):
        train(TrainConfig(out=str(run)), resume=True, show_progress=False)


def test_partial_batches_never_reach_the_loss(tmp_path):
    """drop_last: 100 images with batch 32 make 3 full steps per epoch."""
    result = train(tiny(tmp_path / "run", limit=100, epochs=1, eval_every=0), show_progress=False)
    assert result.steps == 3 and result.metrics[0]["images"] == 96
    assert np.isfinite(result.final_loss)


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++")), reason="inductor needs a C++ compiler"
)
def test_compiled_run_trains_the_same_model(tmp_path):
    """--compile trains through torch.compile; the checkpoint is the plain model's and close to eager's.

    Kernel rounding differs, and a few SGD steps amplify it (the step losses agree to 4 digits for
    the first steps, then drift as two eager runs with other thread counts do), hence loose bounds.
    """
    eager = train(tiny(tmp_path / "eager", epochs=1, eval_every=0), show_progress=False)
    compiled = train(tiny(tmp_path / "compiled", epochs=1, eval_every=0, compile=True), show_progress=False)
    assert json.loads((compiled.run_dir / "run.json").read_text())["config"]["train"]["compile"] is True
    a, b = load_checkpoint(eager.run_dir), load_checkpoint(compiled.run_dir)
    assert a.model_state.keys() == b.model_state.keys()  # no "_orig_mod." prefixes
    wa, wb = (
        torch.cat([v.flatten().float() for k, v in w.items() if "weight" in k])
        for w in (a.model_state, b.model_state)
    )
    assert (wa - wb).norm() < 0.01 * wa.norm()
    assert abs(eager.final_loss - compiled.final_loss) < 2e-3 * eager.final_loss


def test_compile_without_a_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(train_mod.torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvedgeError, match="--compile needs a C\\+\\+ compiler"):
        train(tiny(tmp_path / "run", compile=True), show_progress=False)
