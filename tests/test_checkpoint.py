"""The run folder's checkpoint: everything to resume in one safetensors file, written atomically."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from conftest import tiny_config

from invspread_edge import checkpoint
from invspread_edge.checkpoint import build_model, load_checkpoint, save_checkpoint
from invspread_edge.model import create_model
from invspread_edge_runtime.errors import CheckpointError
from invspread_edge_runtime.files import sha256_file


def trained_state(seed=0):
    torch.manual_seed(seed)
    model = create_model("cifar_resnet18", width=8, embedding_dim=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(4, 3, 28, 28)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_keeps_everything(tmp_path):
    model, opt = trained_state()
    rng = {"torch_cpu": torch.get_rng_state()}
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, tiny_config(), 3, 42, opt, rng, extra={"partial_epoch": {"steps": 2}})
    ckpt = load_checkpoint(tmp_path)  # a run folder works as well as the file
    assert (ckpt.epoch, ckpt.step, ckpt.extra) == (3, 42, {"partial_epoch": {"steps": 2}})
    assert ckpt.config == tiny_config() and ckpt.sha256 == sha256_file(path)
    assert torch.equal(ckpt.rng["torch_cpu"], rng["torch_cpu"])
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model_state[k], v)
    _, opt2 = trained_state(seed=1)
    opt2.load_state_dict(ckpt.optimizer_state)
    want, got = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert want.keys() == got.keys() and len(want) == len(list(model.parameters()))
    for i in want:
        assert torch.equal(want[i]["momentum_buffer"], got[i]["momentum_buffer"])
    assert opt2.param_groups[0]["lr"] == 0.1
    rebuilt = build_model(ckpt)
    assert not rebuilt.training
    x = torch.randn(2, 3, 28, 28)
    assert torch.allclose(rebuilt(x), model.eval()(x))


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained_state()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, tiny_config(), 1, 10, opt)
    before = sha256_file(path)

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, tiny_config(), 2, 20, opt)
    assert sha256_file(path) == before and load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]  # no temporary left


def test_damaged_foreign_and_wrong_files(tmp_path, tiny_run):
    good = (tiny_run / "checkpoint.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an invspread-edge checkpoint"):
        load_checkpoint(foreign)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="ONNX model"):
        load_checkpoint(onnx)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty_run")


def test_weights_for_another_architecture(tmp_path, tiny_run):
    ckpt = load_checkpoint(tiny_run)
    ckpt.config = dict(ckpt.config, width=16)
    with pytest.raises(CheckpointError, match="do not fit architecture"):
        build_model(ckpt)


def test_format_constant_is_versioned():
    assert checkpoint.FORMAT.endswith("/1")
