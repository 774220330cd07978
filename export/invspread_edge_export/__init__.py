"""invspread-edge export: checkpoint → verified ONNX, INT8 (QDQ), FP16 and TensorRT engines.

One job per module: `onnx_export` (dynamo exporter, metadata), `parity` (the runtime's ort-cpu
backend vs PyTorch), `calibration_set` (which images calibrate; the sets in the top-level `calibration/`),
`calibrate` (the reader and the range cache), `quantize` (the two INT8 artifacts), `fp16`,
`accuracy_check` (converted vs FP32 on held-out images), `engines` (TensorRT engines at export),
`export_folder` (the folder's lock, staging and stale artifacts), `report`, and `pipeline`, which
runs them in order:

    from invspread_edge import build_model, load_checkpoint
    from invspread_edge_export import ExportOptions, export_model, meta_from_config

    ckpt = load_checkpoint("runs/fmnist")
    report = export_model(build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256),
                          ExportOptions(out_dir=Path("runs/fmnist/export"), int8=True), data="fashion-mnist")

This package may import torch, onnx and onnxruntime; it never imports `invspread_edge`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invspread_edge_runtime.lazy import lazy_getattr
from invspread_edge_runtime.version import __version__

__all__ = ["ExportOptions", "ExportReport", "__version__", "export_model", "meta_from_config"]

if TYPE_CHECKING:  # pragma: no cover
    from .meta import meta_from_config
    from .pipeline import ExportOptions, export_model
    from .report import ExportReport

__getattr__ = lazy_getattr(
    __name__,
    {
        "ExportOptions": ".pipeline",
        "export_model": ".pipeline",
        "ExportReport": ".report",
        "meta_from_config": ".meta",
    },
)
