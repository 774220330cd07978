"""FP16 artifact: float32 interface, normalisation in FP32, close to PyTorch; the converter itself."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge_export.fp16 import convert_to_fp16
from invspread_edge_export.images import model_inputs
from invspread_edge_export.parity import check_parity
from invspread_edge_runtime.metadata import read_model_meta


def _types(model):
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return model, types


def test_interface_stays_float32_and_normalisation_fp32(tiny_export):
    model, types = _types(onnx.load(str(tiny_export / "model.fp16.onnx")))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    for node in model.graph.node:
        if node.op_type in ("ReduceL2", "Div", "Clip"):
            assert all(types[i] != TensorProto.FLOAT16 for i in node.input if i in types), node.name
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    floor = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == clip.input[1]))
    assert floor.dtype == np.float32 and float(floor) == np.float32(1e-12)  # not flushed to FP16's 1e-7
    assert read_model_meta(tiny_export / "model.fp16.onnx").precision == "fp16"


def test_fp16_matches_pytorch(tiny_export, tiny_run, fmnist_test):
    meta = read_model_meta(tiny_export / "model.onnx")
    inputs = model_inputs(fmnist_test, meta, np.arange(7))
    result = check_parity(
        build_model(load_checkpoint(tiny_run)), tiny_export / "model.fp16.onnx", inputs, precision="fp16"
    )
    assert result.passed and result.min_cosine > 0.999
    assert (tiny_export / "model.fp16.onnx").stat().st_size < 0.7 * (
        tiny_export / "model.onnx"
    ).stat().st_size


def _tiny_graph(weight: np.ndarray) -> onnx.ModelProto:
    """x (N, 4) → MatMul W → ReduceL2 → Div: the shape of our heads, small enough to reason about."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
        helper.make_node("ReduceL2", ["y", "axes"], ["n"], name="norm", keepdims=1),
        helper.make_node("Div", ["y", "n"], ["out"], name="div"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_converter_on_a_small_graph():
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    weight[0, 0] = 1e6  # beyond FP16: clamped and counted
    result = convert_to_fp16(_tiny_graph(weight))
    onnx.checker.check_model(result.model, full_check=True)
    assert result.clamped_weights == 1
    assert set(result.fp32_nodes) == {"norm", "div"}
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
