"""FP32 ONNX → INT8 ONNX with explicit quantization (QuantizeLinear/DequantizeLinear pairs).

Two artifacts, because the two targets want different layouts (DESIGN.md, "Precision and engines"):
- `int8` (model.int8.onnx) for TensorRT and GPUs: int8 activations and weights, symmetric, every
  zero-point 0; biases stay float (TensorRT's Q/DQ takes int8, not int32). TensorRT 10.x strongly
  typed and 11.x read precision from these nodes.
- `int8-cpu` (model.int8-cpu.onnx) for ONNX Runtime on CPUs: uint8 asymmetric activations, int8
  symmetric weights, int32 biases: the layout its VNNI/AVX-512 kernels fuse into QLinearConv.
Weights are per-channel in both. The embedding head (the last Gemm/MatMul) stays FP32 by default:
it is tiny, and its output is the embedding itself.

The pre-processing trap: `quant_pre_process` first runs ONNX Runtime's symbolic shape inference,
which fails on the dynamo exporter's graph (`TypeError: object of type 'NoneType' has no len()` in
`_infer_Expand`, on the Shape → Concat → Expand that `F.normalize` exports to). Our input shapes are
static except the batch, so ONNX's own shape inference is enough: we call `quant_pre_process` with
`skip_symbolic_shape=True` (it still runs ONNX Runtime's basic graph optimisation and ONNX shape
inference, and marks the model as pre-processed).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from invspread_edge_runtime.errors import ModelError
from invspread_edge_runtime.metadata import ARTIFACT_FILES

from .calibrate import METHODS
from .calibration_set import DEFAULT_METHOD

TARGETS = ("int8", "int8-cpu")
FILENAMES = ARTIFACT_FILES  # the runtime finds the artifacts by these names


@dataclass(frozen=True)
class QuantSettings:
    activation_type: QuantType
    weight_type: QuantType
    extra_options: dict
    reduce_range: bool = False  # 7-bit weights


# int8-cpu takes 7-bit weights (reduce_range): on x86 CPUs without VNNI (AVX2 or AVX-512 alone, e.g.
# the AMD EPYC this was seen on) the u8 x s8 kernels add pairs of products in int16, which saturates
# with full-range weights: mean cosine to FP32 fell to 0.966 there (0.99+ on a VNNI Xeon). 7-bit
# weights cannot saturate; the file is exported once and runs on whichever CPU it is copied to.
SETTINGS = {
    "int8": QuantSettings(
        QuantType.QInt8,
        QuantType.QInt8,
        {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    ),
    "int8-cpu": QuantSettings(
        QuantType.QUInt8,
        QuantType.QInt8,
        {"ActivationSymmetric": False, "WeightSymmetric": True},
        reduce_range=True,
    ),
}


def prepare(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """ONNX Runtime's recommended pre-processing, minus the symbolic shape inference (see above)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The embedding head: the last Gemm or MatMul of the graph (empty when there is none)."""
    names = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return names[-1:]


def quantize(
    prepared_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    target: str,
    cache_file: str | os.PathLike[str],
    *,
    method: str = DEFAULT_METHOD,
    keep_head_fp32: bool = True,
) -> Path:
    """Quantize `prepared_path` for `target` into `out_path` (not atomic: callers write to a temp)
    with the ranges in `cache_file` (from `calibrate.compute_ranges`)."""
    if target not in SETTINGS:
        raise ValueError(f"Invalid target {target!r}. Only {', '.join(SETTINGS)} are supported.")
    settings = SETTINGS[target]
    excluded = head_nodes(onnx.load_model(str(prepared_path))) if keep_head_fp32 else []
    try:
        with _quiet():
            quantize_static(
                str(prepared_path),
                str(out_path),
                None,  # no reader: the ranges come from the cache
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=settings.reduce_range,
                activation_type=settings.activation_type,
                weight_type=settings.weight_type,
                nodes_to_exclude=excluded,
                calibrate_method=METHODS[method],
                extra_options=dict(settings.extra_options),
                calibration_cache_path=str(cache_file),
            )
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise ModelError(f"INT8 quantization ({target}) failed: {str(exc).splitlines()[0][:300]}") from exc
    return Path(out_path)


@dataclass(frozen=True)
class ZeroPoint:
    node: str
    op_type: str
    dtype: str
    max_abs: int


def zero_points(model: onnx.ModelProto | str | os.PathLike[str]) -> list[ZeroPoint]:
    """Every QuantizeLinear/DequantizeLinear zero-point of a model (an absent one counts as 0)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_model(str(model))
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            found.append(ZeroPoint(node.name, node.op_type, "absent", 0))
            continue
        if node.input[2] not in consts:
            raise ModelError(f"zero-point of {node.name} is computed at run time, not a constant")
        zp = consts[node.input[2]]
        found.append(
            ZeroPoint(node.name, node.op_type, str(zp.dtype), int(np.abs(zp.astype(np.int64)).max(initial=0)))
        )
    return found


def check_tensorrt_ready(model: onnx.ModelProto | str | os.PathLike[str]) -> int:
    """Raise unless every Q/DQ node is int8 with zero-point 0 (what TensorRT accepts); return their count."""
    points = zero_points(model)
    bad = [p for p in points if p.max_abs != 0 or p.dtype not in ("int8", "absent")]
    if not points:
        raise ModelError("the INT8 model has no QuantizeLinear/DequantizeLinear nodes")
    if bad:
        raise ModelError(
            f"{len(bad)} Q/DQ nodes are not symmetric int8 (first: {bad[0].node}, {bad[0].dtype}, "
            f"zero-point {bad[0].max_abs}); TensorRT needs zero-point 0"
        )
    return len(points)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress and logs warnings; the CLI reports instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
