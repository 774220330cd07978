"""A numerically broken run is not a finished run: a loss or weights that stop being finite stop
the run at that step, keep the last good checkpoint, say so in run.json and one line, and leave a
run that resumes; eval, --init and resume refuse NaN or inf weights by name."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tiny import TINY_TRAIN_OPTIONS, invedge

from invspread_edge import training as train_mod
from invspread_edge.checkpoint import load_checkpoint
from invspread_edge.config import TrainConfig
from invspread_edge.evaluate import evaluate_run
from invspread_edge.loss import InvariantSpreadLoss
from invspread_edge.training import train
from invspread_edge_runtime.errors import NonFiniteError

STEPS = 16  # steps per epoch below: more than training.LOSS_READ_EVERY, so the loss is read mid-epoch


def tiny(out, **overrides) -> TrainConfig:
    cfg = dict(
        data="fashion-mnist",
        out=str(out),
        width=8,
        embedding_dim=16,
        limit=16 * STEPS,
        batch_size=16,
        epochs=3,
        precision="fp32",
        workers=0,
        eval_every=0,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def nan_loss_at(monkeypatch, step: int) -> None:
    """The loss of training step `step` (1-based, counted over the run) becomes NaN: its backward
    makes every weight NaN, as a real divergence does."""
    forward = InvariantSpreadLoss.forward
    calls = {"n": 0}

    def poisoned(self, z1, z2):
        calls["n"] += 1
        loss = forward(self, z1, z2)
        return loss * float("nan") if calls["n"] == step else loss

    monkeypatch.setattr(InvariantSpreadLoss, "forward", poisoned)


def run_json(run) -> dict:
    return json.loads((run / "run.json").read_text())


def read_metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run the tests' runs would be without the fault."""
    run = tmp_path_factory.mktemp("whole") / "run"
    train(tiny(run), show_progress=False)
    return run


def test_a_nan_loss_stops_at_its_step_keeps_the_last_good_checkpoint_and_resumes(
    tmp_path, monkeypatch, uninterrupted
):
    run = tmp_path / "run"
    nan_loss_at(monkeypatch, STEPS + 4)  # epoch 2, step 4: the loop reads the loss only at step 10
    with pytest.raises(NonFiniteError) as info:
        train(tiny(run), show_progress=False)
    line = str(info.value)
    assert "training diverged: the loss was nan at epoch 2, step 4 of 16" in line
    assert f"keeps the last good checkpoint (epoch 1, step {STEPS})" in line
    assert "--lr" in line and f"--init {run}" in line and "--resume" in line

    ckpt = load_checkpoint(run)  # the end of epoch 1, not overwritten by NaN weights
    assert (ckpt.epoch, ckpt.step) == (1, STEPS) and finite(ckpt.model_state)
    info_json = run_json(run)
    assert info_json["status"] == "failed" and (info_json["epoch"], info_json["step"]) == (1, STEPS)
    assert "epoch 2, step 4" in info_json["error"]
    assert [m["epoch"] for m in read_metrics(run)] == [1]

    monkeypatch.undo()  # the cause has passed: the kept checkpoint resumes into the uninterrupted run
    resumed = train(TrainConfig(out=str(run)), resume=True, show_progress=False)
    assert resumed.epochs_done == 3 and run_json(run)["status"] == "finished"
    assert "error" not in run_json(run)
    got, want = read_metrics(run), read_metrics(uninterrupted)
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-5, abs=0)


def test_a_mid_epoch_checkpoint_is_the_one_kept(tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    nan_loss_at(monkeypatch, STEPS + 6)  # saves at steps 4, 8, ..., 20: the one at 24 must not happen
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 6 of 16.*epoch 1, step 20\)"):
        train(tiny(run, save_every_steps=4), show_progress=False)
    ckpt = load_checkpoint(run)
    assert (ckpt.epoch, ckpt.step) == (1, 20) and finite(ckpt.model_state)
    assert (run_json(run)["epoch"], run_json(run)["step"], run_json(run)["status"]) == (1, 20, "failed")

    monkeypatch.undo()
    train(TrainConfig(out=str(run)), resume=True, show_progress=False)
    got, want = read_metrics(run), read_metrics(uninterrupted)
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-5, abs=0)


def test_weights_that_overflow_under_a_finite_loss_are_never_saved(tmp_path, monkeypatch):
    """The last step of an epoch can leave inf weights while its own loss was finite: the epoch's
    checkpoint is refused by its weights, naming them, and the previous one stays."""
    run = tmp_path / "run"
    step_once = train_mod.optimizer_step
    calls = {"n": 0}

    def overflowing(loss, optimizer, scaler):
        step_once(loss, optimizer, scaler)
        calls["n"] += 1
        if calls["n"] == 2 * STEPS:
            optimizer.param_groups[0]["params"][0].data.fill_(math.inf)

    monkeypatch.setattr(train_mod, "optimizer_step", overflowing)
    with pytest.raises(NonFiniteError) as info:
        train(tiny(run), show_progress=False)
    line = str(info.value)
    assert "the weights at step 32 hold NaN or infinite values in 1 tensor (model.conv1.weight)" in line
    assert f"(epoch 1, step {STEPS})" in line
    ckpt = load_checkpoint(run)
    assert (ckpt.epoch, ckpt.step) == (1, STEPS) and finite(ckpt.model_state)
    assert run_json(run)["status"] == "failed"


def test_divergence_in_the_first_epoch_leaves_the_initial_weights_and_says_so(tmp_path, monkeypatch):
    run = tmp_path / "run"
    nan_loss_at(monkeypatch, 2)
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 2 of 16.*holds only the initial weights"):
        train(tiny(run, epochs=1), show_progress=False)
    assert (load_checkpoint(run).step, run_json(run)["status"]) == (0, "failed")


def test_an_overwrite_that_diverges_keeps_the_old_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny(run, epochs=1), show_progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    nan_loss_at(monkeypatch, 3)
    with pytest.raises(NonFiniteError, match="Nothing was replaced"):
        train(tiny(run, epochs=1, seed=3), overwrite=True, show_progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (tmp_path / ".run.staging").exists()


def test_the_cli_says_it_in_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    nan_loss_at(monkeypatch, 3)
    run = tmp_path / "run"
    code = invedge("train", "--data", "fashion-mnist", "--limit", "64", "--epochs", "2", "--out", run,
                   *TINY_TRAIN_OPTIONS, "--eval-every", "0", "-q")  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err
    assert lines[-1].startswith("error: training diverged: the loss was nan at epoch 2, step 1 of 2")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert run_json(run)["status"] == "failed"


def poison(path, name: str, value: float, whole: bool = False) -> None:
    """Set one value (or, `whole`, every value) of tensor `name` in a safetensors file, keeping its metadata."""
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    tensor = tensors[name].clone()
    if whole:
        tensor.fill_(value)
    else:
        tensor.view(-1)[0] = value
    tensors[name] = tensor
    save_file(tensors, str(path), metadata=metadata)


@pytest.fixture
def short_run(uninterrupted, tmp_path):
    import shutil

    return shutil.copytree(uninterrupted, tmp_path / "run")


def test_eval_and_init_name_the_nonfinite_weights(short_run, tmp_path):
    poison(short_run / "checkpoint.safetensors", "model.layer2.0.bn1.running_var", math.inf)
    with pytest.raises(NonFiniteError, match=r"checkpoint.safetensors holds NaN or infinite weights in 1 tensor "
                                             r"\(layer2.0.bn1.running_var\)"):  # fmt: skip
        evaluate_run(str(short_run), None, limit=100)
    with pytest.raises(NonFiniteError, match=r"layer2\.0\.bn1\.running_var"):
        train(tiny(tmp_path / "new", init=str(short_run), epochs=1), show_progress=False)
    assert not (tmp_path / "new").exists()


def test_eval_refuses_finite_weights_that_overflow_into_nan_embeddings(short_run):
    poison(short_run / "checkpoint.safetensors", "model.fc.weight", 3e38, whole=True)
    with pytest.raises(NonFiniteError, match=r"run \(cifar_resnet18 width 8, epoch 3\): the model gives NaN or "
                                             r"infinite embeddings for 100 of 100 images"):  # fmt: skip
        evaluate_run(str(short_run), None, limit=100)


def test_resume_refuses_nonfinite_optimizer_state(short_run):
    key = next(
        k
        for k in safe_open(str(short_run / "checkpoint.safetensors"), "pt").keys()  # noqa: SIM118
        if k.startswith("optimizer.")
    )
    poison(short_run / "checkpoint.safetensors", key, math.nan)
    with pytest.raises(NonFiniteError, match=rf"optimizer state in 1 tensor \({key}\)"):
        train(TrainConfig(out=str(short_run)), resume=True, epochs=4, show_progress=False)
    assert run_json(short_run)["status"] == "finished"  # refused before anything was written
