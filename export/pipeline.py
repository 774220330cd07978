"""The export, start to end: FP32 ONNX (+ parity), INT8 pair (+ calibration, accuracy), FP16.

    meta = meta_from_config(ckpt.config, ckpt.sha256)
    report = export_model(model, meta, ExportOptions(out_dir=run / "export", int8=True), data="fashion-mnist")

Each artifact is written to a temporary file beside its target, verified there (parity, accuracy,
zero-points) and only then renamed into place: a failed check leaves no file behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from invspread_edge_runtime.datasets import open_dataset
from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.files import atomic_path, atomic_write_json, sha256_file
from invspread_edge_runtime.metadata import ModelMeta

from . import accuracy_check, calibrate, calibration_set, quantize
from .images import model_inputs, spread_indices
from .onnx_export import DEFAULT_OPSET, check_model, load_model, set_metadata, to_onnx_proto
from .parity import DEFAULT_BATCH_SIZES, check_parity, require_parity, torch_embeddings
from .report import Artifact, ExportReport

if TYPE_CHECKING:
    from torch import nn

CACHE_DIR = ".cache"
CALIBRATION_RECORD = "calibration.json"


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    int8: bool = False
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    calib: Path | None = None  # a folder of images; None: the default set for the data
    calib_count: int = calibration_set.DEFAULT_COUNT
    calib_method: str = "minmax"
    calib_percentile: float = calibrate.DEFAULT_PERCENTILE
    keep_head_fp32: bool = True
    parity_images: int = 32
    parity_batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    accuracy_queries: int = accuracy_check.DEFAULT_QUERIES
    accuracy_memory: int = accuracy_check.DEFAULT_MEMORY
    accuracy_bound: float = accuracy_check.DEFAULT_BOUND
    allow_accuracy_drop: float | None = None
    min_mean_cosine: float = accuracy_check.DEFAULT_MIN_MEAN_COSINE


Log = Callable[[str], None]


def export_model(
    model: nn.Module,
    meta: ModelMeta,
    options: ExportOptions,
    *,
    data: str,
    checkpoint: dict[str, Any] | None = None,
    log: Log = lambda message: None,
) -> ExportReport:
    """Write the requested artifacts and `report.json` into `options.out_dir`; return the report.

    `data`: where parity and held-out accuracy images come from (the run's data set, or a folder).
    Raises ModelError (parity), AccuracyError (accuracy past the bound), DataError (images).
    """
    started = time.perf_counter()
    out = Path(options.out_dir)
    calib = calibration_images(options, data) if options.int8 else None  # bad --calib fails before any work
    _check_writable(out)
    report = ExportReport(out_dir=out, checkpoint=checkpoint or {}, meta=meta.to_props())

    parity_inputs = _parity_inputs(data, meta, max(options.parity_images, max(options.parity_batch_sizes)))
    reference = torch_embeddings(model, parity_inputs)

    fp32 = _export_fp32(model, meta, options, parity_inputs, reference, log)
    report.artifacts.append(fp32)

    if options.int8 or options.fp16:
        log(f"embedding held-out images from {data} with the FP32 model (accuracy reference)")
        held = accuracy_check.held_out_set(data, meta, options.accuracy_queries, options.accuracy_memory)
        fp32_emb = accuracy_check.embed_held_out(fp32.path, held, meta)
        if options.int8:
            assert calib is not None
            report.calibration = _export_int8(fp32.path, meta, options, calib, held, fp32_emb, report, log)
        if options.fp16:
            report.artifacts.append(
                _export_fp16(model, fp32.path, meta, options, parity_inputs, reference, held, fp32_emb, log)
            )
    for artifact in report.artifacts:
        if artifact.accuracy is not None and artifact.accuracy.status == "warn":
            report.warnings.append(
                f"{artifact.precision}: {artifact.accuracy.drop_points:.2f}-point {artifact.accuracy.metric} drop, "
                f"above the {artifact.accuracy.bound_points:g}-point bound (allowed by --allow-accuracy-drop)"
            )
    report.seconds = time.perf_counter() - started
    report.write()
    return report


# --- FP32 -----------------------------------------------------------------------------------------


def _export_fp32(
    model: nn.Module,
    meta: ModelMeta,
    options: ExportOptions,
    inputs: np.ndarray,
    reference: np.ndarray,
    log: Log,
) -> Artifact:
    import onnx

    started = time.perf_counter()
    target = options.out_dir / quantize.FILENAMES["fp32"]
    log("exporting the FP32 ONNX model (dynamo exporter)")
    proto = to_onnx_proto(model, meta, opset=options.opset)
    set_metadata(proto, meta)
    check_model(proto, meta)
    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        parity = check_parity(model, tmp, inputs, batch_sizes=options.parity_batch_sizes, reference=reference)
        require_parity(parity, target)
    return _artifact("fp32", target, started, parity=parity)


# --- INT8 -----------------------------------------------------------------------------------------


def _export_int8(
    fp32_path: Path,
    meta: ModelMeta,
    options: ExportOptions,
    calib: calibration_set.CalibrationSet,
    held: accuracy_check.HeldOut,
    fp32_emb: accuracy_check.Embedded,
    report: ExportReport,
    log: Log,
) -> dict[str, Any]:
    key = calibrate.cache_key(sha256_file(fp32_path), calib, options.calib_method, options.calib_percentile)
    cache_file = calibrate.cache_path(options.out_dir / CACHE_DIR, key, options.calib_method)
    cache_hit = cache_file.is_file()
    reader = calibrate.CalibrationReader(calib, meta)
    log(
        f"calibrating on {len(calib)} images ({calib.name}, {options.calib_method})"
        if not cache_hit
        else f"calibration ranges from the cache ({cache_file.name}): skipping calibration"
    )
    with tempfile.TemporaryDirectory(prefix="invedge-quant-") as work:
        prepared = quantize.prepare(fp32_path, Path(work) / "prepared.onnx")
        if not cache_hit:
            calibrate.compute_ranges(
                prepared, reader, options.calib_method, cache_file, options.calib_percentile
            )
        for target_name in quantize.TARGETS:
            started = time.perf_counter()
            target = options.out_dir / quantize.FILENAMES[target_name]
            raw = quantize.quantize(
                prepared,
                Path(work) / f"{target_name}.onnx",
                target_name,
                cache_file,
                method=options.calib_method,
                keep_head_fp32=options.keep_head_fp32,
            )
            proto = load_model(raw)
            set_metadata(proto, _precision_meta(meta, target_name, calib, options.calib_method))
            notes = []
            if target_name == "int8":
                count = quantize.check_tensorrt_ready(proto)
                notes.append(f"{count} Q/DQ nodes, all int8 with zero-point 0")
            log(f"checking {target.name} on {len(held.queries)} held-out images")
            accuracy = _save_checked(proto, target, target_name, held, fp32_emb, meta, options)
            report.artifacts.append(_artifact(target_name, target, started, accuracy=accuracy, notes=notes))
    record = calib.record()
    atomic_write_json(options.out_dir / CALIBRATION_RECORD, {**record, "method": options.calib_method})
    return {
        "name": calib.name,
        "set_id": calib.set_id,
        "count": len(calib),
        "method": options.calib_method,
        **({"percentile": options.calib_percentile} if options.calib_method == "percentile" else {}),
        "images_file": CALIBRATION_RECORD,
        "cache_file": str(cache_file.relative_to(options.out_dir)),
        "cache": "hit" if cache_hit else "miss",
        "batches_read": reader.batches_read,
    }


def calibration_images(
    options: ExportOptions, data: str, log: Log = lambda m: None
) -> calibration_set.CalibrationSet:
    """`--calib FOLDER`, else the shipped manifest for `data`, else drawn from its train split."""
    if options.calib is not None:
        return calibration_set.from_folder(options.calib, options.calib_count)
    return calibration_set.default_set(data, options.calib_count)


def _precision_meta(
    meta: ModelMeta, precision: str, calib: calibration_set.CalibrationSet, method: str
) -> ModelMeta:
    extra = {
        **meta.extra,
        "calibration_set": calib.set_id,
        "calibration_name": calib.name,
        "calibration_method": method,
    }
    return replace(meta, precision=precision, extra=extra)


# --- FP16 -----------------------------------------------------------------------------------------


def _export_fp16(
    model: nn.Module,
    fp32_path: Path,
    meta: ModelMeta,
    options: ExportOptions,
    inputs: np.ndarray,
    reference: np.ndarray,
    held: accuracy_check.HeldOut,
    fp32_emb: accuracy_check.Embedded,
    log: Log,
) -> Artifact:
    from .fp16 import convert_to_fp16

    started = time.perf_counter()
    target = options.out_dir / quantize.FILENAMES["fp16"]
    log("converting to FP16 (normalisation kept in FP32)")
    converted = convert_to_fp16(load_model(fp32_path))
    set_metadata(converted.model, replace(meta, precision="fp16"))
    check_model(converted.model, meta)
    parity = None

    def parity_check(tmp: Path) -> None:
        nonlocal parity
        parity = check_parity(
            model, tmp, inputs, precision="fp16", batch_sizes=options.parity_batch_sizes, reference=reference
        )
        require_parity(parity, target)

    accuracy = _save_checked(converted.model, target, "fp16", held, fp32_emb, meta, options, parity_check)
    notes = [f"FP32 nodes: {', '.join(converted.fp32_nodes)}"]
    if converted.clamped_weights:
        notes.append(f"{converted.clamped_weights} weights clamped to the FP16 range")
    return _artifact("fp16", target, started, parity=parity, accuracy=accuracy, notes=notes)


# --- shared ---------------------------------------------------------------------------------------


def _save_checked(
    proto,
    target: Path,
    precision: str,
    held: accuracy_check.HeldOut,
    fp32_emb: accuracy_check.Embedded,
    meta: ModelMeta,
    options: ExportOptions,
    extra_check: Callable[[Path], None] | None = None,
) -> accuracy_check.AccuracyResult:
    """Write `proto` to a temporary file, check it, keep it only when the checks pass."""
    import onnx

    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        if extra_check is not None:
            extra_check(tmp)
        emb = accuracy_check.embed_held_out(tmp, held, meta)
        result = accuracy_check.compare(
            held,
            fp32_emb,
            emb,
            precision,
            bound=options.accuracy_bound,
            allowed=options.allow_accuracy_drop,
            min_mean_cosine=options.min_mean_cosine,
        )
        accuracy_check.require_accuracy(result)
    return result


def _artifact(precision: str, path: Path, started: float, **kwargs: Any) -> Artifact:
    return Artifact(
        precision=precision,
        path=path,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        seconds=time.perf_counter() - started,
        **kwargs,
    )


def _parity_inputs(data: str, meta: ModelMeta, count: int) -> np.ndarray:
    """Real images for the parity check: the data's test split (a folder: its own images)."""
    images = open_dataset(data, "test")
    if len(images) < count:
        raise DataError(
            f"{data} has {len(images)} images; the parity check needs {count}", "Pass --data with more images"
        )
    return model_inputs(images, meta, spread_indices(len(images), count, seed=0))


def _check_writable(out: Path) -> None:
    """Fail before any work when the output folder cannot be written (not after minutes of it)."""
    if out.exists() and not out.is_dir():
        raise InvedgeError(f"output path {out} exists and is not a folder", "Choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InvedgeError(
            f"cannot write to {out}: {exc.strerror or exc}", "Choose a writable --out folder"
        ) from exc
    if not os.access(out, os.W_OK):
        raise InvedgeError(f"cannot write to {out}", "Choose a writable --out folder")
