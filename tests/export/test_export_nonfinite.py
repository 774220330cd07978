"""Export refuses a model with NaN or inf weights, or whose own embeddings overflow, before it
writes anything: a graph of NaN is not an export."""

from __future__ import annotations

import math

import pytest
import torch

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge_export.meta import meta_from_config
from invspread_edge_export.parity import name_some, nonfinite_tensors
from invspread_edge_export.pipeline import ExportOptions, export_model
from invspread_edge_runtime.errors import NonFiniteError


@pytest.fixture
def model_and_meta(tiny_run):
    ckpt = load_checkpoint(tiny_run)
    return build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256)


def files_under(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_nonfinite_tensors_names_only_the_broken_ones():
    tensors = {
        "a": torch.zeros(3),
        "b": torch.tensor([1.0, math.nan]),
        "steps": torch.tensor([7]),  # integers cannot be NaN
        "c": torch.tensor([-math.inf]),
        "d": torch.ones(2, dtype=torch.bfloat16),
    }
    assert nonfinite_tensors(tensors) == ["b", "c"]
    assert nonfinite_tensors({}) == []
    assert name_some(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"


def test_inf_weights_are_refused_by_name_before_any_file(model_and_meta, tmp_path):
    model, meta = model_and_meta
    with torch.no_grad():
        model.layer1[0].bn1.running_var.fill_(math.inf)  # finite outputs: only the weights tell
    out = tmp_path / "export"
    with pytest.raises(NonFiniteError, match=r"run.safetensors holds NaN or infinite weights in 1 tensor "
                                             r"\(layer1\.0\.bn1\.running_var\)"):  # fmt: skip
        export_model(model, meta, ExportOptions(out_dir=out), data="fashion-mnist",
                     checkpoint={"path": "run.safetensors"})  # fmt: skip
    assert not out.exists()


def test_weights_that_overflow_into_nan_embeddings_are_refused(model_and_meta, tmp_path):
    model, meta = model_and_meta
    with torch.no_grad():
        model.fc.weight.fill_(3e38)  # finite, but the embeddings overflow to inf / inf
    out = tmp_path / "export"
    with pytest.raises(
        NonFiniteError, match=r"the model gives NaN or infinite embeddings for \d+ of 32 images in PyTorch"
    ):
        export_model(model, meta, ExportOptions(out_dir=out), data="fashion-mnist")
    assert not out.exists() or files_under(out) == []
