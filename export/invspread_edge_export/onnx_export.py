"""PyTorch encoder → one self-contained ONNX file carrying the runtime's metadata.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) traces the model with
`torch.export`, folds BatchNorm into the convolutions and writes opset ≥ 18. The batch axis is
dynamic; height and width are fixed to the checkpoint's image size because the runtime always
resizes to it. Metadata comes from `ModelMeta.to_props()`, so the runtime preprocesses without torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from invspread_edge_runtime.errors import ModelError
from invspread_edge_runtime.files import atomic_path
from invspread_edge_runtime.metadata import ModelMeta, replace_props

if TYPE_CHECKING:
    import onnx
    from torch import nn

DEFAULT_OPSET = 18  # the lowest the dynamo exporter writes; TensorRT 10.3 (JetPack 6) parses up to 20
MIN_OPSET = 18
PRODUCER = "invspread-edge"


def export_onnx(
    model: nn.Module,
    meta: ModelMeta,
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export `model` (N, 3, S, S) → (N, d) to `out_path` atomically; return the path.

    Raises ModelError when the exporter fails or the result does not pass `onnx.checker`.
    """
    proto = to_onnx_proto(model, meta, opset=opset)
    set_metadata(proto, meta)
    check_model(proto, meta)
    return save_model(proto, out_path)


def to_onnx_proto(model: nn.Module, meta: ModelMeta, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace with the dynamo exporter; the exporter's own progress chatter is swallowed."""
    import torch

    if opset < MIN_OPSET:
        raise ModelError(f"Invalid opset {opset}. Only opset {MIN_OPSET} or newer is supported.")
    model = model.eval().float().cpu()
    size = meta.image_size
    example = torch.zeros(2, 3, size, size)  # batch 2: torch.export specialises a batch of 1
    batch = torch.export.Dim("batch", min=1)
    chatter = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter):
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[meta.input_name],
                output_names=[meta.output_name],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        cause: BaseException | None = exc
        while cause is not None:  # torch.export wraps a Ctrl-C in its own error: it stays a Ctrl-C
            if isinstance(cause, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            cause = cause.__cause__ or cause.__context__
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the exporter colours its messages
        first = (text.strip().splitlines() or [exc.__class__.__name__])[0]
        raise ModelError(f"the ONNX exporter failed on {meta.arch}: {first[:300]}") from exc
    if program is None:
        raise ModelError("the ONNX exporter returned no program")
    proto = program.model_proto
    proto.producer_name = PRODUCER
    proto.graph.name = meta.arch
    return proto


def set_metadata(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    """Replace our metadata_props with `meta` (other producers' entries are kept)."""
    replace_props(proto, meta.to_props())


def check_model(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    """`onnx.checker` plus our interface: input (N, 3, S, S) float32, output (N, d), dynamic N."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelError("exported ONNX must have exactly one input and one output")
    expected = {
        meta.input_name: [None, 3, meta.image_size, meta.image_size],
        meta.output_name: [None, meta.embedding_dim],
    }
    for value in (graph.input[0], graph.output[0]):
        if value.name not in expected:
            raise ModelError(f"exported ONNX has an unexpected tensor {value.name!r}")
        ttype = value.type.tensor_type
        if ttype.elem_type != onnx.TensorProto.FLOAT:
            raise ModelError(f"exported ONNX tensor {value.name!r} is not float32")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if dims != expected[value.name]:
            raise ModelError(
                f"exported ONNX tensor {value.name!r} has shape {dims}, expected {expected[value.name]}"
            )
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise ModelError("exported ONNX refers to external data; it must be one self-contained file")


def save_model(proto: onnx.ModelProto, out_path: str | os.PathLike[str]) -> Path:
    """Write one file (no external data) atomically: a failure leaves no partial file."""
    import onnx

    out_path = Path(out_path)
    if proto.ByteSize() >= 2**31:
        raise ModelError("model is larger than 2 GB and cannot be one self-contained ONNX file")
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return out_path


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file, turning a damaged one into ModelError."""
    import onnx

    try:
        return onnx.load_model(str(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}") from exc
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX file ({exc.__class__.__name__})") from exc
