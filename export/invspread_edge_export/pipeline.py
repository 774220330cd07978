"""The export, start to end: FP32 ONNX (+ parity), INT8 pair (+ calibration, accuracy), FP16,
and TensorRT engines when asked (`engines.py`).

    meta = meta_from_config(ckpt.config, ckpt.sha256)
    report = export_model(model, meta, ExportOptions(out_dir=run / "export", int8=True), data="fashion-mnist")

Each artifact is written to a temporary file beside its target, verified there (parity, accuracy,
zero-points) and only then renamed into place: a failed check leaves no file behind. The whole
export is staged in a hidden folder inside the output folder, under its lock, and moved into place
only when every artifact passed (`export_folder.py`: the folder's lock, staging and clean-up);
report.json, written last, names the set that belongs together.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from invspread_edge_runtime.bounds import check_bounds
from invspread_edge_runtime.deploy.deepstream import check_target as check_deepstream_target
from invspread_edge_runtime.deploy.triton import TritonOptions, check_repository_target, write_repository
from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.evaluation.datasets import open_dataset
from invspread_edge_runtime.files import atomic_path, atomic_write_json, sha256_file
from invspread_edge_runtime.integrity import PROBE_MANIFEST
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.verify.export import check_exported
from invspread_edge_runtime.verify.probes import DEFAULT_COUNT as PROBE_COUNT
from invspread_edge_runtime.verify.probes import write_probe_set

from . import accuracy_check, calibrate, calibration_set, quantize
from .bounds import EXPORT_BOUNDS
from .engines import EngineOptions, build_engines
from .export_folder import (
    CACHE_DIR,
    CALIBRATION_RECORD,
    check_writable,
    claim,
    export_lock,
    move_into_place,
    staging_folder,
)
from .images import model_inputs, spread_indices
from .onnx_export import DEFAULT_OPSET, check_model, load_model, set_metadata, to_onnx_proto
from .parity import (
    DEFAULT_BATCH_SIZES,
    check_parity,
    require_finite_outputs,
    require_finite_weights,
    require_parity,
    torch_embeddings,
)
from .report import Artifact, ExportReport

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    int8: bool = False
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    calib: Path | None = None  # a folder of images; None: the default set for the data
    calib_count: int = calibration_set.DEFAULT_COUNT
    calib_method: str = calibration_set.DEFAULT_METHOD
    calib_percentile: float = calibrate.DEFAULT_PERCENTILE
    keep_head_fp32: bool = True
    parity_images: int = 32
    parity_batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    accuracy_queries: int = accuracy_check.DEFAULT_QUERIES
    accuracy_memory: int = accuracy_check.DEFAULT_MEMORY
    accuracy_bound: float = accuracy_check.DEFAULT_BOUND
    allow_accuracy_drop: float | None = None
    min_mean_cosine: float = accuracy_check.DEFAULT_MIN_MEAN_COSINE
    overwrite: bool = False  # replace an export of another checkpoint in out_dir
    cache_dir: Path | None = None  # calibration ranges cache (default: out_dir/.cache)
    engine: EngineOptions | None = None  # also build TensorRT engines into out_dir (needs TensorRT)
    deepstream: Path | None = None  # also write an nvinfer SGIE config and its graph there
    triton: Path | None = None  # also write a Triton model repository there (deploy/triton)

    def check(self) -> None:
        """The one-line error for a setting `invedge export` refuses (named by its flag). The CLI
        calls it before loading the checkpoint; `export_model` does not (a library caller may set a
        negative bound on purpose) and checks only `engine` (`EngineOptions.check`)."""
        if self.calib_method not in calibration_set.METHOD_NAMES:
            raise InvedgeError(
                f"Invalid --calib-method {self.calib_method!r}. "
                f"Only {', '.join(calibration_set.METHOD_NAMES)} are supported."
            )
        if self.calib is not None and not self.int8:
            raise InvedgeError("--calib is used only with --int8", "Add --int8")
        check_bounds(EXPORT_BOUNDS, vars(self))

    def check_engine(self) -> None:
        """`EngineOptions.check` for the artifacts this export writes (the engines are built from
        its int8/fp16 ones, else fp32): before any export work, also for library callers."""
        if self.engine is not None:
            self.engine.check([p for p, on in (("int8", self.int8), ("fp16", self.fp16)) if on] or ["fp32"])


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

    The folder's lifecycle is `export_folder`'s: held under its exclusive lock for the whole export,
    everything written into a staging folder inside it and moved into place only once every check
    passed; then the files of an earlier export that do not belong to this checkpoint are removed,
    and `report.json` is written last. A failed export leaves the folder as it was. A folder holding
    an export of another checkpoint is refused unless `options.overwrite`.
    """
    options.check_engine()  # no TensorRT, no DLA core: fail now, not after minutes of export
    # NaN or inf weights (a diverged run) export into a graph of NaN: refused before any work
    require_finite_weights(model, str((checkpoint or {}).get("path") or "the model"))
    out = Path(options.out_dir)
    if options.deepstream is not None:  # a bad target fails now, not after minutes of export
        check_deepstream_target(Path(options.deepstream), options.overwrite, export=out)
    if options.triton is not None:  # the same for the Triton repository
        check_repository_target(
            out, options.triton, _triton_options(options), exists_hint=_triton_hint(out, options)
        )
    calib = calibration_images(options, data) if options.int8 else None  # bad --calib fails before any work
    check_writable(out)
    with export_lock(out):
        earlier = claim(out, meta.checkpoint_sha256, overwrite=options.overwrite, log=log)
        with staging_folder(out) as stage:
            staged = replace(options, out_dir=stage, cache_dir=options.cache_dir or out / CACHE_DIR)
            report = _export_staged(model, meta, staged, calib, data=data, checkpoint=checkpoint, log=log)
            move_into_place(stage, out, report, earlier, meta.checkpoint_sha256, log)
        report.write()  # last: it names the set of files that belong together
        if options.engine is not None:  # built from the files in place; the report then names them too
            report.engines = build_engines(report, options.engine, log)
            report.write()
        if options.deepstream is not None:  # from the files in place, like the engines
            _write_deepstream(out, Path(options.deepstream), options.overwrite, log)
        if options.triton is not None:
            _write_triton(out, options, log)
    return report


def _triton_options(options: ExportOptions) -> TritonOptions:
    """The defaults, with `max_batch_size` from the export's batch range: the engines' maximum batch
    when it builds engines (what the export was checked for), else the default."""
    if options.engine is None:
        return TritonOptions(overwrite=options.overwrite)
    return TritonOptions(overwrite=options.overwrite, max_batch=options.engine.max_batch)


def _triton_hint(out: Path, options: ExportOptions) -> str:
    """The next step when the repository has a model of ours of that name (export has no --name)."""
    return (
        "Pass --overwrite, or write it with: invedge deploy triton "
        f"{shlex.quote(str(out))} --out {shlex.quote(str(options.triton))} --name NAME"
    )


def _write_triton(out: Path, options: ExportOptions, log: Log) -> None:
    """The Triton repository of the export in place, default settings (other settings, and a
    TensorRT plan: invedge deploy triton)."""
    result = write_repository(
        out, Path(options.triton), _triton_options(options), exists_hint=_triton_hint(out, options)
    )
    log(f"Triton: wrote {', '.join(result.models)} into {result.repo} (from {result.artifact.name})")


def _write_deepstream(out: Path, target: Path, overwrite: bool, log: Log) -> None:
    """The DeepStream folder of the best artifact for TensorRT (deploy/deepstream.write_deepstream)."""
    from invspread_edge_runtime.deploy.deepstream import Settings, write_deepstream

    result = write_deepstream(out, target, Settings(), overwrite=overwrite)
    log(
        f"DeepStream: wrote {', '.join(result.files)} into {target} ({result.precision}); folded graph "
        f"checked: {result.check.summary()}"
    )


def _export_staged(
    model: nn.Module,
    meta: ModelMeta,
    options: ExportOptions,
    calib: calibration_set.CalibrationSet | None,
    *,
    data: str,
    checkpoint: dict[str, Any] | None,
    log: Log,
) -> ExportReport:
    """The export itself, into `options.out_dir` (the staging folder `export_model` made and
    checked), with the calibration set `export_model` already read (None without INT8)."""
    started = time.perf_counter()
    out = Path(options.out_dir)
    report = ExportReport(out_dir=out, checkpoint=checkpoint or {}, meta=meta.to_props())

    parity_inputs = _parity_inputs(data, meta, max(options.parity_images, max(options.parity_batch_sizes)))
    reference = torch_embeddings(model, parity_inputs)
    require_finite_outputs(reference, str(report.checkpoint.get("path") or "the model"))

    fp32 = _export_fp32(model, meta, options, parity_inputs, reference, log)
    report.artifacts.append(fp32)
    # fixed images + their FP32 embeddings, for `invedge verify` and the engine builds
    probes = (
        calib if calib is not None else calibration_images(replace(options, calib_count=PROBE_COUNT), data)
    )
    write_probe_set(
        out, fp32.path, probes.images, probes.ids, min_mean_cosine=options.min_mean_cosine, log=log
    )

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
    report.warnings.extend(check_exported(out, [a.path for a in report.artifacts], log))
    # probes.json is final now (check_exported stored its figures); it holds every probe file's sha256
    report.probes = {"manifest": PROBE_MANIFEST, "sha256": sha256_file(out / PROBE_MANIFEST)}
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
    fp32_emb: accuracy_check.Embeddings,
    report: ExportReport,
    log: Log,
) -> dict[str, Any]:
    key = calibrate.cache_key(sha256_file(fp32_path), calib, options.calib_method, options.calib_percentile)
    cache_root = options.cache_dir or options.out_dir / CACHE_DIR
    cache_file = calibrate.cache_path(cache_root, key, options.calib_method)
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
        "cache_file": str(cache_file.relative_to(cache_root.parent)),
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
    fp32_emb: accuracy_check.Embeddings,
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
    fp32_emb: accuracy_check.Embeddings,
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
