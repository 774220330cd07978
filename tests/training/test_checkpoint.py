"""The run folder's checkpoint: everything to resume in one safetensors file, written atomically."""

from __future__ import annotations

import errno
import json

import pytest
import safetensors.torch
import torch
from tiny import tiny_config

from invspread_edge import checkpoint
from invspread_edge.checkpoint import build_model, load_checkpoint, save_checkpoint
from invspread_edge.model import create_model
from invspread_edge_runtime.errors import CheckpointError, InvedgeError
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


class FailingWrites:
    """Stands in for `open` in checkpoint.py: the file's second write raises `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, path, mode="r"):
        fh = open(path, mode)  # noqa: SIM115 - closed by the caller's with
        real_write, calls = fh.write, []

        def write(data):
            calls.append(len(data))
            if len(calls) == 2:
                raise self.error
            return real_write(data)

        fh.write = write
        return fh


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
    ids=["kill", "disk-full"],
)
def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch, error):
    model, opt = trained_state()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, tiny_config(), 1, 10, opt)
    before = sha256_file(path)

    monkeypatch.setattr(checkpoint, "open", FailingWrites(error), raising=False)
    if isinstance(error, OSError):  # one line naming the file, not safetensors' own error type
        with pytest.raises(InvedgeError, match=f"disk full while writing {path}") as info:
            save_checkpoint(path, model, tiny_config(), 2, 20, opt)
        assert "the previous checkpoint.safetensors is intact" in str(info.value)
    else:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, model, tiny_config(), 2, 20, opt)
    assert sha256_file(path) == before and load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]  # no temporary left


def _with_state(tmp_path, state, tensors=None):
    """A file with our format tag and `state` as its stored state (JSON text, or an object)."""
    path = tmp_path / "checkpoint.safetensors"
    text = state if isinstance(state, str) else json.dumps(state)
    tensors = {"model.w": torch.zeros(2)} if tensors is None else tensors
    safetensors.torch.save_file(tensors, str(path), metadata={"format": checkpoint.FORMAT, "state": text})
    return path


def _good_state():
    return {"config": tiny_config(), "epoch": 1, "step": 8, "extra": {}}


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("state", "what"),
    [
        ("[1, 2]", "state is not a JSON object"),
        (_without(_good_state(), "config"), "config is missing"),
        (dict(_good_state(), config=["arch"]), "config is missing or not an object"),
        (dict(_good_state(), config=_without(tiny_config(), "arch")), "no architecture"),
        (dict(_good_state(), config=tiny_config(image_size="28")), "'image_size'"),
        (dict(_good_state(), config=tiny_config(embedding_dim=0)), "'embedding_dim'"),
        (dict(_good_state(), config=tiny_config(width=True)), "'width'"),
        (dict(_good_state(), config=_without(tiny_config(), "mean")), "'mean'"),
        (dict(_good_state(), config=tiny_config(std=[0.3, 0.3])), "'std'"),
        (dict(_good_state(), config=tiny_config(std=[0.3, 0.0, 0.3])), "'std' has a value <= 0"),
        (dict(_good_state(), config=tiny_config(data=3)), "'data'"),
        (_without(_good_state(), "epoch"), "'epoch'"),
        (dict(_good_state(), step=-1), "'step'"),
        (dict(_good_state(), epoch="1"), "'epoch'"),
        (dict(_good_state(), extra=[]), "'extra'"),
        (dict(_good_state(), optimizer={"param_groups": "sgd"}), "optimizer state"),
        (dict(_good_state(), optimizer={"param_groups": [{}], "extras": {"x": {}}}), "optimizer"),
    ],
)
def test_our_format_tag_with_a_bad_state(tmp_path, state, what):
    path = _with_state(tmp_path, state)
    with pytest.raises(CheckpointError, match="carries our format tag") as info:
        load_checkpoint(path)
    assert what in str(info.value) and str(path) in str(info.value)


def test_our_format_tag_without_weights(tmp_path):
    path = _with_state(tmp_path, _good_state(), tensors={"rng.torch_cpu": torch.zeros(2, dtype=torch.uint8)})
    with pytest.raises(CheckpointError, match="weights are missing"):
        load_checkpoint(path)
    good = _with_state(tmp_path, _good_state())
    assert load_checkpoint(good).epoch == 1  # the same state with weights loads


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
