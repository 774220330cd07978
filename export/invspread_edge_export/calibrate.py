"""Feed calibration images to ONNX Runtime's calibrator, and key the cache of its results.

The reader produces exactly what the runtime feeds the model (`images.model_inputs`: the runtime's
resize, crop and normalisation), in a fixed order and batch size, so calibration is reproducible.
`compute_ranges` runs ONNX Runtime's calibrator (`create_calibrator`) and saves the ranges with its
`save_tensors_data`; `quantize_static(..., calibration_cache_path=...)` then loads them. The cache
is keyed by the FP32 model's sha256, the calibration set's id and the method's settings, so a
re-export skips calibrating and both INT8 artifacts share one calibration.

Why not let `quantize_static` calibrate: it forwards only five calibrator settings, not the
histogram sizes, and ONNX Runtime 1.32's entropy calibrator defaults to num_bins=128 with
num_quantized_bins=128, which leaves a single candidate threshold (the full range): "entropy" would
silently equal minmax (measured here: identical scales). We pass 2048 bins (as TensorRT's entropy
calibrator) and 255 quantized bins (the int8 levels over the two-sided histogram ONNX Runtime builds).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from invspread_edge_runtime.metadata import ModelMeta

from .calibration_set import METHOD_NAMES, CalibrationSet
from .images import model_inputs

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
assert tuple(METHODS) == METHOD_NAMES, "calibration_set.METHOD_NAMES lists the methods calibrate runs"
DEFAULT_PERCENTILE = 99.999
CALIBRATION_BATCH = 32
HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 255


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


def calibrator_options(method: str, percentile: float = DEFAULT_PERCENTILE) -> dict:
    """`create_calibrator` settings. Ranges are collected asymmetric: the GPU artifact symmetrises
    them when quantizing (ActivationSymmetric), so one set of ranges serves both artifacts."""
    if method not in METHODS:
        raise ValueError(f"Invalid calibration method {method!r}. Only {', '.join(METHODS)} are supported.")
    options: dict = {"symmetric": False}
    if method == "entropy":
        options.update(num_bins=HISTOGRAM_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif method == "percentile":
        options.update(num_bins=HISTOGRAM_BINS, percentile=percentile)
    return options


def compute_ranges(
    prepared_path: str | os.PathLike[str],
    reader: CalibrationReader,
    method: str,
    cache_file: str | os.PathLike[str],
    percentile: float = DEFAULT_PERCENTILE,
) -> Path:
    """Run the calibration images through the model and write the tensor ranges to `cache_file`."""
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static quantizes
    reader.rewind()
    with (
        tempfile.TemporaryDirectory(prefix="invedge-calib-") as work,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        calibrator = create_calibrator(
            Path(prepared_path),
            op_types,
            augmented_model_path=str(Path(work) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            providers=["CPUExecutionProvider"],
            extra_options=calibrator_options(method, percentile),
        )
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_file)  # ONNX Runtime's own format, written via temp + rename
    return Path(cache_file)


def cache_key(
    model_sha256: str, calib: CalibrationSet, method: str, percentile: float = DEFAULT_PERCENTILE
) -> str:
    """What determines the ranges: the model, the images (in order) and the method's settings."""
    parts = {
        "model": model_sha256,
        "calibration_set": calib.set_id,
        "method": method,
        "options": calibrator_options(method, percentile),
        "batch": CALIBRATION_BATCH,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike[str], key: str, method: str) -> Path:
    return Path(cache_dir) / f"calib-{method}-{key[:16]}.json"
