"""ONNX export: a self-contained file with our metadata, a dynamic batch, equal to PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny import EMBEDDING_ATOL

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge_export.images import model_inputs, spread_indices
from invspread_edge_export.meta import meta_from_config
from invspread_edge_export.onnx_export import export_onnx
from invspread_edge_export.parity import check_parity, require_parity
from invspread_edge_export.parity import cpu_backend as ort_session
from invspread_edge_export.parity import infer_in_batches as ort_embeddings
from invspread_edge_runtime.errors import CheckpointError, InvedgeError, ModelError
from invspread_edge_runtime.metadata import read_model_meta


def test_exported_file_interface_and_metadata(tiny_export, tiny_run):
    path = tiny_export / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["embeddings"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 28, 28]
    assert proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 32
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    leftovers = [p.name for p in tiny_export.rglob("*") if p.name.endswith((".tmp", ".data"))]
    assert leftovers == []  # no temporary or external-data files

    meta = read_model_meta(path)
    ckpt = load_checkpoint(tiny_run)
    assert meta.checkpoint_sha256 == ckpt.sha256
    assert meta.precision == "fp32"
    assert (meta.image_size, meta.embedding_dim) == (28, 32)
    assert meta.mean == pytest.approx(tuple(ckpt.config["mean"]))
    assert meta.std == pytest.approx(tuple(ckpt.config["std"]))
    assert meta.resize == "shorter_side_center_crop" and meta.channels == "RGB"
    assert meta.toolkit_version


def test_parity_on_real_images(tiny_export, tiny_run, fmnist_test):
    ckpt = load_checkpoint(tiny_run)
    meta = read_model_meta(tiny_export / "model.onnx")
    inputs = model_inputs(fmnist_test, meta, spread_indices(len(fmnist_test), 15))
    result = check_parity(build_model(ckpt), tiny_export / "model.onnx", inputs, batch_sizes=(1, 7, 15))
    assert result.passed, result
    assert result.min_cosine >= 0.99999 and result.max_abs_diff < 1e-4
    require_parity(result, "model.onnx")


def test_parity_catches_a_different_model(tiny_export, tiny_run, fmnist_test):
    import torch

    ckpt = load_checkpoint(tiny_run)
    model = build_model(ckpt)
    with torch.no_grad():
        model.fc.weight.mul_(-1.0)  # the ONNX file no longer computes this module
    meta = read_model_meta(tiny_export / "model.onnx")
    inputs = model_inputs(fmnist_test, meta, np.arange(7))
    result = check_parity(model, tiny_export / "model.onnx", inputs)
    assert not result.passed
    with pytest.raises(ModelError, match="does not match PyTorch"):
        require_parity(result, "model.onnx")


def test_batch_sizes_agree(tiny_export, fmnist_test):
    meta = read_model_meta(tiny_export / "model.onnx")
    inputs = model_inputs(fmnist_test, meta, np.arange(9))
    session = ort_session(tiny_export / "model.onnx")
    one, nine = ort_embeddings(session, inputs, 1), ort_embeddings(session, inputs, 9)
    np.testing.assert_allclose(one, nine, rtol=0, atol=EMBEDDING_ATOL)
    np.testing.assert_allclose(np.linalg.norm(nine, axis=1), 1.0, atol=1e-5)


def test_failed_export_leaves_nothing(tmp_path, tiny_run):
    ckpt = load_checkpoint(tiny_run)
    meta = meta_from_config(ckpt.config, ckpt.sha256)
    wrong = meta_from_config({**ckpt.config, "embedding_dim": 16}, ckpt.sha256)  # interface check fails
    with pytest.raises(ModelError, match="shape"):
        export_onnx(build_model(ckpt), wrong, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
    assert meta.embedding_dim == 32


def test_ctrl_c_inside_the_exporter_stays_a_ctrl_c(tmp_path, tiny_run, monkeypatch):
    """torch.export wraps a KeyboardInterrupt in its own error: that is Ctrl-C, not "the exporter
    failed" (which would tell the user the model cannot be exported)."""
    import torch

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("\x1b[96mThis is step 1/3\x1b[0m of exporting the model") from exc

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    ckpt = load_checkpoint(tiny_run)
    meta = meta_from_config(ckpt.config, ckpt.sha256)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(build_model(ckpt), meta, tmp_path / "model.onnx")
    monkeypatch.setattr(
        torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("\x1b[96mno\x1b[0m"))
    )
    with pytest.raises(ModelError) as failed:
        export_onnx(build_model(ckpt), meta, tmp_path / "model.onnx")
    assert "\x1b" not in str(failed.value) and "exporter failed" in str(failed.value)
    assert list(tmp_path.iterdir()) == []


def test_meta_from_incomplete_config():
    with pytest.raises(CheckpointError, match="lacks"):
        meta_from_config({"arch": "cifar_resnet18"}, "0" * 64)
    with pytest.raises(InvedgeError):
        meta_from_config(
            {"arch": "x", "embedding_dim": 4, "image_size": 8, "mean": [0, 0, 0], "std": [0, 1, 1]}, "0" * 64
        )
