"""The range of every number `invedge export` takes, checked by `ExportOptions.check` before the
checkpoint loads (the engine's batch and workspace: `invspread_edge_runtime.bounds`).

Light at import (no onnx, no torch): `invedge export --help` shows these ranges.
"""

from __future__ import annotations

from invspread_edge_runtime.bounds import Bound

from .calibration_set import MIN_IMAGES
from .onnx_export import MIN_OPSET

MAX_OPSET = 23  # the newest opset torch's exporter writes (TensorRT 10.3 parses up to 20)

EXPORT_BOUNDS: dict[str, Bound] = {  # ExportOptions field → its flag's range
    # calibration inputs are held in memory, as float32 at the model's size
    "calib_count": Bound("--calib-count", MIN_IMAGES, 10_000),
    # held-out queries, and twice as many memory images, embedded once per artifact
    "accuracy_queries": Bound("--accuracy-images", 10, 100_000),
    "accuracy_bound": Bound("--max-accuracy-drop", 0, 100),  # points of accuracy: 100 accepts any
    "allow_accuracy_drop": Bound("--allow-accuracy-drop", 0, 100),
    "min_mean_cosine": Bound("--min-cosine", 0, 1, above=True),
    "opset": Bound("--opset", MIN_OPSET, MAX_OPSET),
}
