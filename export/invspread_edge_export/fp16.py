"""FP32 ONNX → FP16 ONNX, with the L2 normalisation and overflow-prone ops kept in FP32.

Why our own pass rather than onnxconverter-common's `convert_float_to_float16`: with
`keep_io_types=True` and the last node in its block list, onnxconverter-common 1.16 turns the graph
output into float16 (it casts the blocked node's output to FP16 and then sees no FP32 output to
restore), and it converts the Clip floor of `F.normalize` (1e-12) to FP16, where it flushes to 1e-7.
This pass is small and explicit:
- every node computes in FP16 except the FP32 set: ops that overflow or lose range in FP16
  (`KEEP_FP32_OPS`: sums of squares, powers, division, exp, ...) and everything downstream of the
  final normalisation's first op (ReduceL2 and friends), so the normalisation runs fully in FP32;
- a Cast is inserted wherever a tensor crosses between the two sets (one per tensor and direction);
- the graph input and output stay float32 (casts at the edges);
- FP16 weights are clamped to ±65504 (counted in the result, never silently).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from invspread_edge_runtime.errors import ModelError

NORM_OPS = {"ReduceL2", "ReduceSumSquare", "LpNormalization"}
KEEP_FP32_OPS = NORM_OPS | {
    "Pow", "Sqrt", "Div", "Reciprocal", "Exp", "Log", "Softmax", "LogSoftmax", "ReduceSum",
    "ReduceProd", "ReduceLogSumExp", "Resize", "Range", "CumSum", "TopK", "RandomUniformLike",
}  # fmt: skip
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Fp16Result:
    model: onnx.ModelProto
    fp32_nodes: tuple[str, ...]  # names (or op types when unnamed) of the nodes kept in FP32
    casts: int
    clamped_weights: int


def convert_to_fp16(model: onnx.ModelProto) -> Fp16Result:
    """Return an FP16 copy of `model` (float32 input/output) and what was kept in FP32."""
    model = onnx.shape_inference.infer_shapes(copy.deepcopy(model), strict_mode=True)
    graph = model.graph
    dtypes = _tensor_types(model)
    keep = _fp32_nodes(graph)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    # a Constant computes in FP16 unless only FP32 nodes read it
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and all(c in keep for c in consumers.get(node.output[0], [])):
            keep.add(i)

    fp32_names = tuple(graph.node[i].name or graph.node[i].op_type for i in sorted(keep))
    initializers = {t.name: t for t in graph.initializer}
    clamped = 0
    output_casts = 0
    new_inits: dict[str, TensorProto] = {}
    current = {name: t for name, t in dtypes.items()}  # dtype of each tensor after conversion
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=to))
            current[out] = to
            casts[key] = out
        return casts[key]

    def fp16_initializer(name: str) -> str:
        nonlocal clamped
        if name not in new_inits:
            array = numpy_helper.to_array(initializers[name])
            clamped += int((np.abs(array) > FP16_MAX).sum())
            half = np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)
            shared = any(c in keep for c in consumers.get(name, []))
            new_name = f"{name}__fp16" if shared else name
            new_inits[name] = numpy_helper.from_array(half, new_name)
            current[new_name] = TensorProto.FLOAT16
        return new_inits[name].name

    for i, node in enumerate(graph.node):
        to_fp16 = i not in keep
        want, other = (
            (TensorProto.FLOAT16, TensorProto.FLOAT) if to_fp16 else (TensorProto.FLOAT, TensorProto.FLOAT16)
        )
        for j, name in enumerate(node.input):
            if not name or current.get(name) not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                continue
            if to_fp16 and name in initializers and initializers[name].data_type == TensorProto.FLOAT:
                node.input[j] = fp16_initializer(name)
            elif current[name] == other:
                node.input[j] = cast(name, want)
        if to_fp16:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(
                        numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name)
                    )
                if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
            for name in node.output:
                if dtypes.get(name) == TensorProto.FLOAT:
                    current[name] = TensorProto.FLOAT16
        new_nodes.append(node)

    # outputs stay float32
    for output in graph.output:
        if current.get(output.name) == TensorProto.FLOAT16:
            inner = f"{output.name}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if n == output.name else n for n in node.input]
            new_nodes.append(
                helper.make_node(
                    "Cast", [inner], [output.name], name=f"{output.name}_cast", to=TensorProto.FLOAT
                )
            )
            output_casts += 1

    used = {n for node in new_nodes for n in node.input}
    replaced = {name for name, t in new_inits.items() if t.name == name}  # converted in place
    kept_inits = [t for t in graph.initializer if t.name in used and t.name not in replaced]
    kept_inits += [t for t in new_inits.values() if t.name in used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for value in [*model.graph.input, *model.graph.output]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ModelError(f"FP16 conversion changed the type of {value.name!r}; it must stay float32")
    return Fp16Result(model, fp32_names, len(casts) + output_casts, clamped)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = attr.t.data_type
    return types


def _fp32_nodes(graph: onnx.GraphProto) -> set[int]:
    """Indices of nodes kept in FP32: KEEP_FP32_OPS, plus all nodes downstream of a NORM_OPS node."""
    keep = {i for i, n in enumerate(graph.node) if n.op_type in KEEP_FP32_OPS}
    tainted: set[str] = set()
    for i, node in enumerate(graph.node):  # nodes are topologically sorted (ONNX requires it)
        if node.op_type in NORM_OPS or any(name in tainted for name in node.input):
            keep.add(i)
            tainted.update(node.output)
    return keep
