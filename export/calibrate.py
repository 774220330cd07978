"""Feed calibration images to ONNX Runtime's calibrator, and key the cache of its results.

The reader produces exactly what the runtime feeds the model (`images.model_inputs`: the runtime's
resize, crop and normalisation), in a fixed order and batch size, so calibration is reproducible.
The ranges ONNX Runtime computes are cached (its `calibration_cache_path`, JSON) under a key made
of the FP32 model's sha256, the calibration set's id and the method, so a re-export skips
calibrating and both INT8 artifacts share one calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from invspread_edge_runtime.metadata import ModelMeta
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from .calibration_set import CalibrationSet
from .images import model_inputs

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
DEFAULT_PERCENTILE = 99.999
CALIBRATION_BATCH = 32


class CalibrationReader(CalibrationDataReader):
    """Batches of (B, 3, S, S) float32 from a CalibrationSet, decoded lazily, rewindable."""

    def __init__(self, calib: CalibrationSet, meta: ModelMeta, batch: int = CALIBRATION_BATCH) -> None:
        self.calib, self.meta, self.batch = calib, meta, batch
        self.batches_read = 0
        self._start = 0

    def get_next(self) -> dict | None:
        if self._start >= len(self.calib):
            return None
        stop = min(self._start + self.batch, len(self.calib))
        inputs = model_inputs(self.calib.images, self.meta, range(self._start, stop))
        self._start = stop
        self.batches_read += 1
        return {self.meta.input_name: inputs}

    def rewind(self) -> None:
        self._start = 0

    def __len__(self) -> int:
        return -(-len(self.calib) // self.batch)


def calibration_options(method: str, percentile: float = DEFAULT_PERCENTILE) -> dict:
    """ONNX Runtime `extra_options` for the calibrator. Ranges are collected asymmetric: the GPU
    artifact symmetrises them when quantizing (ActivationSymmetric), so one cache serves both."""
    if method not in METHODS:
        raise ValueError(f"Invalid calibration method {method!r}. Only {', '.join(METHODS)} are supported.")
    options: dict = {"CalibTensorRangeSymmetric": False}
    if method == "percentile":
        options["CalibPercentile"] = percentile
    return options


def cache_key(
    model_sha256: str, calib: CalibrationSet, method: str, percentile: float = DEFAULT_PERCENTILE
) -> str:
    """What determines the ranges: the model, the images (in order) and the method's settings."""
    parts = {
        "model": model_sha256,
        "calibration_set": calib.set_id,
        "method": method,
        "options": calibration_options(method, percentile),
        "batch": CALIBRATION_BATCH,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike[str], key: str, method: str) -> Path:
    return Path(cache_dir) / f"calib-{method}-{key[:16]}.json"
