"""Device and autocast precision choice (--device, --precision)."""

from __future__ import annotations

import pytest
import torch

from invspread_edge import precision as P
from invspread_edge_runtime.errors import InvedgeError

CPU = torch.device("cpu")


def test_auto_on_cpu_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    assert P.resolve_precision("auto", CPU).name == "bf16"
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    assert P.resolve_precision("auto", CPU).name == "fp32"


def test_explicit_choices_and_errors():
    assert P.resolve_precision("fp32", CPU).dtype is None
    bf16 = P.resolve_precision("bf16", CPU)
    assert bf16.dtype == torch.bfloat16 and not bf16.needs_scaler
    with pytest.raises(InvedgeError, match="fp16 training needs a CUDA GPU"):
        P.resolve_precision("fp16", CPU)
    with pytest.raises(InvedgeError, match="Only auto, fp32, bf16, fp16"):
        P.resolve_precision("int8", CPU)
    assert P.Precision("fp16", "cuda").needs_scaler


def test_autocast_context_runs_matmuls_in_bf16():
    a = torch.randn(4, 4)
    with P.Precision("bf16", "cpu").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with P.Precision("fp32", "cpu").autocast():
        assert (a @ a).dtype == torch.float32


def test_devices():
    assert P.resolve_device("cpu") == CPU
    assert P.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvedgeError, match="Only auto, cpu, cuda"):
        P.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvedgeError, match="no CUDA GPU"):
            P.resolve_device("cuda")


def test_channels_last_where_faster():
    assert P.prefers_channels_last(P.Precision("bf16", "cpu"))
    assert not P.prefers_channels_last(P.Precision("fp32", "cpu"))
    assert P.prefers_channels_last(P.Precision("fp32", "cuda"))
