"""`--init`: our runs, torchvision/timm state dicts (safetensors, weights-only .pth) mapped onto our
model, and one-line errors for everything else."""

from __future__ import annotations

import collections
import json

import pytest
import safetensors.torch
import torch
import torchvision
from tiny import tiny_config

from invspread_edge.checkpoint import save_checkpoint
from invspread_edge.init_weights import foreign_name, init_architecture, load_init, map_keys, own_name
from invspread_edge.model import create_model
from invspread_edge_runtime.errors import CheckpointError
from invspread_edge_runtime.files import sha256_file


@pytest.fixture(scope="module")
def tv_state():
    """torchvision's own resnet18(), with BN statistics that differ from a fresh model's."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean") or key.endswith("running_var"):
            value.copy_(torch.rand_like(value) + 0.5)
        elif key.endswith("num_batches_tracked"):
            value.fill_(7)
    return state


def save_as(tmp_path, state, how):
    """`state` written as a user might have it: safetensors, plain .pth, DDP-prefixed, wrapped."""
    if how == "safetensors":
        path = tmp_path / "w.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    if how == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    elif how == "wrapped":
        state = {"state_dict": state, "epoch": 90, "arch": "resnet18"}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    return path


def one_line_error(source, model, arch) -> str:
    with pytest.raises(CheckpointError) as info:
        load_init(str(source), model, arch)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("how", ["safetensors", "pth", "ddp", "wrapped"])
def test_torchvision_resnet18_loads_with_zero_missing_backbone_keys(tmp_path, tv_state, how):
    path = save_as(tmp_path, tv_state, how)
    torch.manual_seed(1)
    model = create_model("resnet18", embedding_dim=16)
    head = model.fc.weight.detach().clone()
    report = load_init(str(path), model, "resnet18")
    assert report.kind == ("safetensors" if how == "safetensors" else "pth")
    assert report.missing == ["fc.weight", "fc.bias"]  # our embedding head only: no backbone key
    assert sorted(report.unexpected) == [
        ("module." if how == "ddp" else "") + k for k in ("fc.bias", "fc.weight")
    ]  # the ImageNet classifier, never loaded into the head
    assert report.loaded == len(tv_state) - 2 and report.arch is None
    assert report.sha256 == sha256_file(path) and report.source == str(path)
    ours = model.state_dict()
    for key, value in tv_state.items():
        if not key.startswith("fc."):
            assert torch.equal(ours[f"backbone.{key}"], value), key
    assert torch.equal(model.fc.weight, head)
    assert "loaded 120 tensors" in report.summary() and "new: fc.weight, fc.bias" in report.summary()
    assert json.loads(json.dumps(report.to_json()))["missing"] == ["fc.weight", "fc.bias"]


def test_our_own_state_dict_loads_the_head_too(tmp_path):
    torch.manual_seed(0)
    saved = create_model("resnet18", embedding_dim=16)
    path = tmp_path / "ours.pt"
    torch.save(saved.state_dict(), path)
    torch.manual_seed(1)
    model = create_model("resnet18", embedding_dim=16)
    report = load_init(str(path), model, "resnet18")
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.fc.weight, saved.fc.weight)


def test_half_precision_file_is_cast_to_the_models_dtype(tmp_path):
    torch.manual_seed(0)
    saved = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
             for k, v in create_model("cifar_resnet18", width=8, embedding_dim=16).state_dict().items()}  # fmt: skip
    path = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file(saved, str(path))
    model = create_model("cifar_resnet18", width=8, embedding_dim=16)
    load_init(str(path), model, "cifar_resnet18")
    assert model.conv1.weight.dtype == torch.float32
    assert torch.equal(model.conv1.weight, saved["conv1.weight"].float())


def test_imagenet_resnet_into_cifar_resnet_fails_in_one_line_and_copies_nothing(tmp_path, tv_state):
    path = save_as(tmp_path, tv_state, "safetensors")
    model = create_model("cifar_resnet18", width=64, embedding_dim=16)
    before = model.bn1.weight.detach().clone()  # same shape in both: would be copied if anything were
    message = one_line_error(path, model, "cifar_resnet18")
    assert "conv1.weight is (64, 3, 7, 7) there but (64, 3, 3, 3) in cifar_resnet18" in message
    assert "(1 tensor differs)" in message and "--arch resnet18" in message
    assert torch.equal(model.bn1.weight, before)
    narrow = one_line_error(path, create_model("cifar_resnet18", width=8), "cifar_resnet18")
    assert ": conv1.weight is (64, 3, 7, 7) there but (8, 3, 3, 3)" in narrow  # the model's first, not A-Z


def test_our_run_loads_everything_and_names_its_architecture(tmp_path):
    torch.manual_seed(0)
    saved = create_model("cifar_resnet18", width=8, embedding_dim=16)
    opt = torch.optim.SGD(saved.parameters(), lr=0.1, momentum=0.9)
    saved(torch.randn(2, 3, 28, 28)).sum().backward()
    opt.step()
    config = tiny_config(embedding_dim=16, data_fingerprint="x", train={"arch": "cifar_resnet18"})
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint.safetensors", saved, config, epoch=1, step=1, optimizer=opt)
    arch = {"arch": "cifar_resnet18", "width": 8, "embedding_dim": 16}
    assert init_architecture(str(run)) == arch
    assert init_architecture(str(run / "checkpoint.safetensors")) == arch
    for source in (run, run / "checkpoint.safetensors"):
        torch.manual_seed(1)
        model = create_model("cifar_resnet18", width=8, embedding_dim=16)
        report = load_init(str(source), model, "cifar_resnet18")
        assert (report.kind, report.missing, report.unexpected, report.arch) == ("run", [], [], arch)
        assert report.loaded == len(saved.state_dict())
        assert report.sha256 == sha256_file(run / "checkpoint.safetensors")
        for key, value in saved.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    wider = create_model("cifar_resnet18", width=16, embedding_dim=16)
    assert "--arch cifar_resnet18 --width 8 --embedding-dim 16" in one_line_error(
        run, wider, "cifar_resnet18"
    )
    assert "is a cifar_resnet18 run, not resnet18" in one_line_error(
        run, create_model("resnet18"), "resnet18"
    )


def test_foreign_files_have_no_run_architecture(tmp_path, tv_state):
    assert init_architecture(str(save_as(tmp_path, tv_state, "safetensors"))) is None
    assert init_architecture(str(save_as(tmp_path, tv_state, "pth"))) is None


class Opaque:
    pass


class Ordered(collections.OrderedDict):
    pass


@pytest.mark.parametrize("obj", [{"x": Opaque()}, Ordered(w=torch.zeros(2))], ids=["class", "dict-subclass"])
def test_a_pickle_that_is_not_weights_only_is_refused(tmp_path, obj):
    path = tmp_path / "any.pth"
    torch.save(obj, path)
    message = one_line_error(path, create_model("cifar_resnet18", width=8), "cifar_resnet18")
    assert "needs arbitrary pickle, which invedge never loads" in message and "state_dict()" in message


def test_bad_sources_fail_in_one_line(tmp_path):
    model = create_model("cifar_resnet18", width=8)
    assert "no weights at" in one_line_error(tmp_path / "gone.safetensors", model, "cifar_resnet18")
    (tmp_path / "notes.txt").write_text("hello")
    assert ".safetensors" in one_line_error(tmp_path / "notes.txt", model, "cifar_resnet18")
    (tmp_path / "notes.pth").write_text("hello")
    assert "not a PyTorch file" in one_line_error(tmp_path / "notes.pth", model, "cifar_resnet18")
    (tmp_path / "bad.safetensors").write_text("hello")
    assert "not a safetensors file" in one_line_error(tmp_path / "bad.safetensors", model, "cifar_resnet18")
    assert "without checkpoint.safetensors" in one_line_error(tmp_path, model, "cifar_resnet18")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    assert "non-tensor value under 'epoch'" in one_line_error(tmp_path / "meta.pth", model, "cifar_resnet18")
    safetensors.torch.save_file({"head.proj.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    message = one_line_error(tmp_path / "other.safetensors", model, "cifar_resnet18")
    assert "matches cifar_resnet18's names" in message and "head.proj.weight" in message


@pytest.mark.parametrize(
    ("key", "arch", "want"),
    [
        ("conv1.weight", "resnet18", "backbone.conv1.weight"),
        ("module.layer1.0.bn1.num_batches_tracked", "resnet50", "backbone.layer1.0.bn1.num_batches_tracked"),
        ("backbone.layer2.0.downsample.0.weight", "resnet18", "backbone.layer2.0.downsample.0.weight"),
        ("model.encoder.layer4.1.conv2.weight", "resnet34", "backbone.layer4.1.conv2.weight"),
        ("fc.weight", "resnet18", None),
        ("module.fc.bias", "cifar_resnet18", None),
        ("layer2.0.downsample.1.running_var", "cifar_resnet18", "layer2.0.shortcut.1.running_var"),
        ("module.backbone.conv1.weight", "cifar_resnet34", "conv1.weight"),
    ],
)
def test_foreign_names(key, arch, want):
    assert foreign_name(key, arch) == want


def test_own_names_strip_ddp_and_compile_prefixes():
    assert own_name("module._orig_mod.fc.weight") == "fc.weight"
    assert own_name("backbone.conv1.weight") == "backbone.conv1.weight"


def test_map_keys_prefers_the_reading_that_matches_more():
    backbone = ["conv1.weight", "bn1.weight", "bn1.num_batches_tracked"]
    model_keys = [f"backbone.{k}" for k in backbone] + ["fc.weight", "fc.bias"]
    # torchvision's names: 3 matches (fc.* is its classifier) against 2 read as ours (fc.* only)
    assert map_keys([*backbone, "fc.weight", "fc.bias"], model_keys, "resnet18") == {
        k: f"backbone.{k}" for k in backbone
    }
    assert map_keys(model_keys, model_keys, "resnet18") == {k: k for k in model_keys}
    assert map_keys(["fc.weight", "fc.bias"], model_keys, "resnet18") == {
        "fc.weight": "fc.weight",
        "fc.bias": "fc.bias",
    }
