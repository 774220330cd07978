"""INT8 artifacts: TensorRT layout (symmetric, zero-point 0), CPU layout, reproducible builds, cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge_export import quantize
from invspread_edge_export.meta import meta_from_config
from invspread_edge_export.pipeline import ExportOptions, export_model
from invspread_edge_runtime.errors import ModelError
from invspread_edge_runtime.metadata import read_model_meta


def _qdq_zero_points(path):
    """(op, dtype, max |zero-point|) of every Q/DQ node, read straight from the graph."""
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert len(node.input) == 3, f"{node.name} has no explicit zero-point"
            zp = consts[node.input[2]]
            found.append((node.op_type, zp.dtype.name, int(np.abs(zp.astype(np.int64)).max())))
    return model, found


def test_tensorrt_artifact_is_symmetric_int8(tiny_export):
    model, points = _qdq_zero_points(tiny_export / "model.int8.onnx")
    assert len(points) > 40
    assert {dtype for _, dtype, _ in points} == {"int8"}
    assert all(zp == 0 for _, _, zp in points)
    assert quantize.check_tensorrt_ready(model) == len(points)
    # weights quantized per channel: a DequantizeLinear of a conv weight has one scale per output channel
    inits = {t.name: t for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq and all(
        len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weight_dq
    )
    # biases stay float: no int32 DequantizeLinear (TensorRT's Q/DQ takes int8)
    assert all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in weight_dq)


def test_cpu_artifact_has_uint8_activations_int8_weights(tiny_export):
    model, points = _qdq_zero_points(tiny_export / "model.int8-cpu.onnx")
    inits = {t.name for t in model.graph.initializer}
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_q
    dtypes = {p[1] for p in points}
    assert "uint8" in dtypes and "int8" in dtypes
    with pytest.raises(ModelError, match="not symmetric int8"):
        quantize.check_tensorrt_ready(model)


def test_embedding_head_stays_fp32(tiny_export):
    model = onnx.load(str(tiny_export / "model.int8.onnx"))
    head = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_source = producers.get(head.input[1])
    assert weight_source is None  # the Gemm reads its float weight directly, no DequantizeLinear


def test_metadata_says_precision_and_calibration(tiny_export):
    fp32 = read_model_meta(tiny_export / "model.onnx")
    for name, precision in (("model.int8.onnx", "int8"), ("model.int8-cpu.onnx", "int8-cpu")):
        meta = read_model_meta(tiny_export / name)
        assert meta.precision == precision
        assert meta.checkpoint_sha256 == fp32.checkpoint_sha256  # same embedding space
        assert meta.extra["calibration_method"] == "minmax"
        assert len(meta.extra["calibration_set"]) == 64
    record = json.loads((tiny_export / "calibration.json").read_text())
    assert record["count"] == 64 and len(record["images"]) == 64
    assert record["set_id"] == read_model_meta(tiny_export / "model.int8.onnx").extra["calibration_set"]


def test_int8_runs_close_to_fp32(tiny_export, fmnist_test):
    from invspread_edge_export.images import model_inputs
    from invspread_edge_export.parity import cpu_backend as ort_session
    from invspread_edge_export.parity import infer_in_batches as ort_embeddings
    from invspread_edge_runtime.evaluation.accuracy import cosine_stats

    meta = read_model_meta(tiny_export / "model.onnx")
    x = model_inputs(fmnist_test, meta, np.arange(16))
    ref = ort_embeddings(ort_session(tiny_export / "model.onnx"), x, 16)
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        got = ort_embeddings(ort_session(tiny_export / name), x, 16)
        assert cosine_stats(ref, got)[1] > 0.99


def test_rebuild_is_byte_identical_and_reuses_the_cache(tiny_run, tiny_export, tmp_path):
    ckpt = load_checkpoint(tiny_run)
    meta = meta_from_config(ckpt.config, ckpt.sha256)
    options = ExportOptions(
        out_dir=tmp_path,
        int8=True,
        calib_count=64,
        accuracy_queries=50,
        accuracy_memory=100,
        allow_accuracy_drop=100,
    )
    first = export_model(build_model(ckpt), meta, options, data="fashion-mnist")
    assert first.calibration["cache"] == "miss" and first.calibration["batches_read"] > 0
    for name in ("model.onnx", "model.int8.onnx", "model.int8-cpu.onnx"):
        assert (tmp_path / name).read_bytes() == (tiny_export / name).read_bytes(), name
    again = export_model(build_model(ckpt), meta, options, data="fashion-mnist")
    assert again.calibration["cache"] == "hit" and again.calibration["batches_read"] == 0
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        assert (tmp_path / name).read_bytes() == (tiny_export / name).read_bytes(), name


def test_symbolic_shape_inference_trap_is_avoided(tiny_export, tmp_path):
    prepared = quantize.prepare(tiny_export / "model.onnx", tmp_path / "prepared.onnx")
    props = {p.key: p.value for p in onnx.load(str(prepared)).metadata_props}
    assert "onnx.quant.pre_process" in props
