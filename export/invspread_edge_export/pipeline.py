"""The export, start to end: FP32 ONNX (+ parity), INT8 pair (+ calibration, accuracy), FP16,
and TensorRT engines when asked (`engines.py`).

    meta = meta_from_config(ckpt.config, ckpt.sha256)
    report = export_model(model, meta, ExportOptions(out_dir=run / "export", int8=True), data="fashion-mnist")

Each artifact is written to a temporary file beside its target, verified there (parity, accuracy,
zero-points) and only then renamed into place: a failed check leaves no file behind. The whole
export is staged in a hidden folder inside the output folder, under its lock, and moved into place
only when every artifact passed; the files of another checkpoint are removed after that, and
report.json, written last, names the set that belongs together (see `export_model`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from invspread_edge_runtime import verify
from invspread_edge_runtime.datasets import open_dataset
from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.files import (
    PROBE_PREFIX,
    atomic_path,
    atomic_write_json,
    probe_write,
    read_json,
    remove_leftovers,
    replace_folder,
    sha256_file,
)
from invspread_edge_runtime.locks import exclusive_lock
from invspread_edge_runtime.metadata import ModelMeta, read_model_meta

from . import accuracy_check, calibrate, calibration_set, quantize
from .engines import EngineOptions, build_engines
from .images import model_inputs, spread_indices
from .onnx_export import DEFAULT_OPSET, MIN_OPSET, check_model, load_model, set_metadata, to_onnx_proto
from .parity import DEFAULT_BATCH_SIZES, check_parity, require_parity, torch_embeddings
from .report import REPORT_NAME, Artifact, ExportReport

if TYPE_CHECKING:
    from torch import nn

CACHE_DIR = ".cache"
STAGE_PREFIX = ".export-new-"  # the staging folder inside the export folder (see export_model)
CALIBRATION_RECORD = "calibration.json"


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
        if self.accuracy_queries < 10:
            raise InvedgeError(f"Invalid --accuracy-images {self.accuracy_queries}. At least 10 are needed.")
        for flag, points in (
            ("--max-accuracy-drop", self.accuracy_bound),
            ("--allow-accuracy-drop", self.allow_accuracy_drop),
        ):
            if points is not None and points < 0:
                raise InvedgeError(f"Invalid {flag} {points:g}. It is in points and must be 0 or more.")
        if not 0 < self.min_mean_cosine <= 1:
            raise InvedgeError(
                f"Invalid --min-cosine {self.min_mean_cosine:g}. It must be above 0 and at most 1."
            )
        if self.opset < MIN_OPSET:
            raise InvedgeError(f"Invalid --opset {self.opset}. Only opset {MIN_OPSET} or newer is supported.")


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

    The folder is held under an exclusive lock (`export_lock`) for the whole export. Everything is
    written into a staging folder inside it and moved into place only once every check passed; then
    the files of an earlier export that do not belong to this checkpoint are removed, and
    `report.json` is written last. A failed export leaves the folder as it was. A folder holding an
    export of another checkpoint is refused unless `options.overwrite`.
    """
    if options.engine is not None:
        options.engine.check()  # no TensorRT: fail now, not after minutes of export
    out = Path(options.out_dir)
    calib = calibration_images(options, data) if options.int8 else None  # bad --calib fails before any work
    _check_writable(out)
    with export_lock(out):
        previous = previous_export(out)
        others = {sha: names for sha, names in previous.items() if sha != meta.checkpoint_sha256}
        if others and not options.overwrite:
            listed = "; ".join(f"checkpoint {sha[:12]}…: {', '.join(names)}" for sha, names in others.items())
            raise InvedgeError(
                f"{out} holds an export of another checkpoint ({listed})",
                "Pass --overwrite to replace it (the old files go only once the new export has passed "
                "its checks), or choose another --out",
            )
        if previous:
            log(f"replacing the earlier export in {out} once the new one has passed its checks")
        earlier = earlier_artifacts(out, meta.checkpoint_sha256)
        _clear_leftovers(out)
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
        try:
            staged = replace(options, out_dir=stage, cache_dir=options.cache_dir or out / CACHE_DIR)
            report = _export_staged(model, meta, staged, calib, data=data, checkpoint=checkpoint, log=log)
            _move_into(stage, out, skip={REPORT_NAME})
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        report.out_dir = out
        for artifact in report.artifacts:
            artifact.path = out / artifact.path.name
        for removed in remove_stale(out, meta.checkpoint_sha256, report):
            log(f"removed {removed}")  # "NAME: why"
        report.earlier = _still_there(earlier, out, {a.path.name for a in report.artifacts})
        report.write()  # last: it names the set of files that belong together
        if options.engine is not None:  # built from the files in place; the report then names them too
            report.engines = build_engines(report, options.engine, log)
            report.write()
    return report


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

    fp32 = _export_fp32(model, meta, options, parity_inputs, reference, log)
    report.artifacts.append(fp32)
    probe_source = (
        calib
        if calib is not None
        else calibration_images(replace(options, calib_count=verify.DEFAULT_COUNT), data)
    )
    # fixed images + their FP32 embeddings, for `invedge verify` and the engine builds (issue 12)
    probes = probe_source.images, probe_source.ids
    verify.write_probe_set(out, fp32.path, *probes, min_mean_cosine=options.min_mean_cosine, log=log)

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
    report.warnings.extend(verify.check_exported(out, [a.path for a in report.artifacts], log))
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


def check_out_folder(out: Path, default: Path) -> None:
    """`out` is an export folder (new, empty or written by an export), never a run folder, an
    embeddings folder or a folder of images: the export's files (model.onnx, report.json, probe
    images) would mix with theirs, and `embed`/`train` on that folder would pick them up.
    `default`: the export folder the run would get, named in the error's hint."""
    from invspread_edge_runtime.preprocess import IMAGE_SUFFIXES

    if not out.is_dir():
        return
    hint = f"Leave --out out (the default is {default}) or choose a new folder"
    if (out / "checkpoint.safetensors").exists():
        raise InvedgeError(f"--out {out} is a run folder (it holds checkpoint.safetensors)", hint)
    if (out / "manifest.json").exists() or (out / "embeddings.npy").exists():
        raise InvedgeError(f"--out {out} is an embeddings folder (it holds manifest.json)", hint)
    for path in out.rglob("*"):
        inside = path.relative_to(out).parts
        if inside[0] == "probes" or any(part.startswith(".") for part in inside):
            continue  # an earlier export's probe set; staging folders and caches
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise InvedgeError(
                f"--out {out} holds images ({path.relative_to(out)}): the export's probe images and "
                "model files would mix with them",
                hint,
            )


def _check_writable(out: Path) -> None:
    """Fail before any work when the output folder cannot be written (not after minutes of it)."""
    if out.exists() and not out.is_dir():
        raise InvedgeError(f"output path {out} exists and is not a folder", "Choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_write(out)
    except OSError as exc:
        raise InvedgeError(
            f"cannot write to {out}: {exc.strerror or exc}", "Choose a writable --out folder"
        ) from exc
    if not os.access(out, os.W_OK):
        raise InvedgeError(f"cannot write to {out}", "Choose a writable --out folder")


# --- the export folder: one lock, one checkpoint, no leftovers ------------------------------------

_HELD: set[Path] = set()  # export folders whose lock this process holds (export_lock is re-entrant)


@contextlib.contextmanager
def export_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the export folder's exclusive lock (invspread_edge_runtime/locks.py) for the block.

    Re-entrant within this process: `invedge export` holds it across `export_model` and the engine
    builds that follow, so no other writer gets in between. A second process waits, or gets
    LockedError naming the holder.
    """
    key = Path(out).absolute()
    if key in _HELD:
        yield
        return
    with exclusive_lock(key, "export folder"):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def previous_export(out: str | os.PathLike[str]) -> dict[str, list[str]]:
    """checkpoint sha256 → names of the readable artifacts of ours already in `out`."""
    found: dict[str, list[str]] = {}
    for onnx in sorted(Path(out).glob("*.onnx")):
        try:
            meta = read_model_meta(onnx)
        except InvedgeError:
            continue  # not ours, or damaged: remove_stale deals with damaged artifacts of ours
        found.setdefault(meta.checkpoint_sha256, []).append(onnx.name)
    return found


def earlier_artifacts(out: Path, checkpoint_sha256: str) -> list[dict[str, Any]]:
    """The entries of `out`'s report.json for artifacts of this checkpoint (an export that adds
    --fp16 to an --int8 one keeps those files, and its report must still describe them)."""
    try:
        previous = read_json(out / REPORT_NAME, "export report")
        if previous["metadata"]["invedge.checkpoint_sha256"] != checkpoint_sha256:
            return []
        return [
            dict(a) for a in previous["artifacts"] if isinstance(a, dict) and isinstance(a.get("file"), str)
        ]
    except (InvedgeError, KeyError, TypeError):
        return []  # no report, or a damaged one: nothing to carry over


def _still_there(entries: list[dict[str, Any]], out: Path, replaced: set[str]) -> list[dict[str, Any]]:
    """Earlier entries whose file is still in `out`, unchanged, and not replaced by this export."""
    kept = []
    for entry in entries:
        path = out / Path(entry["file"]).name
        if path.name not in replaced and path.is_file() and sha256_file(path) == entry.get("sha256"):
            kept.append(entry | {"from_earlier_export": True})
    return kept


def _clear_leftovers(out: Path) -> None:
    """What killed exports left (their staging folders, atomic writes' temporary files): ours, and
    removed under the folder's lock, so that no leftover ever blocks or confuses a rerun."""
    for entry in out.glob(f"{STAGE_PREFIX}*"):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    for entry in out.glob(f"{PROBE_PREFIX}*"):
        with contextlib.suppress(OSError):
            entry.unlink()
    remove_leftovers(out, [*quantize.FILENAMES.values(), REPORT_NAME, CALIBRATION_RECORD])


def _move_into(stage: Path, out: Path, skip: set[str]) -> None:
    """Move every staged file and folder into `out`, replacing what is there (a folder is moved
    aside first and removed after). Hidden entries (caches, temporary files) stay behind."""
    try:
        for entry in sorted(stage.iterdir()):
            if entry.name in skip or entry.name.startswith("."):
                continue
            target = out / entry.name
            if entry.is_dir() and target.is_dir():
                replace_folder(entry, target)
            else:
                os.replace(entry, target)
    except OSError as exc:
        from invspread_edge_runtime.files import os_error

        raise os_error(exc, out) from exc


def remove_stale(out: str | os.PathLike[str], checkpoint_sha256: str, report: ExportReport) -> list[str]:
    """Remove from `out` what does not belong with this export; returns "NAME: why" per file.

    - models of ours (our metadata) exported from another checkpoint;
    - a file with an artifact's name (model.onnx, ...) that cannot be read as one;
    - engines whose sidecar names another checkpoint, or an ONNX file this export replaced;
    - calibration.json, when no INT8 artifact is left for it to describe.
    Files that are not ours are left alone.
    """
    from invspread_edge_runtime.tensorrt.cache import read_sidecar, sidecar_path

    out = Path(out)
    new = {a.path.name: a.sha256 for a in report.artifacts}
    removed: list[str] = []

    def remove(path: Path, why: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(f"{path.name}: {why}")

    for onnx in sorted(out.glob("*.onnx")):
        if onnx.name in new:
            continue
        try:
            meta = read_model_meta(onnx)
        except InvedgeError:
            if onnx.name in quantize.FILENAMES.values():
                remove(onnx, "damaged, and not part of this export")
            continue
        if meta.checkpoint_sha256 != checkpoint_sha256:
            remove(onnx, f"exported from another checkpoint ({meta.checkpoint_sha256[:12]}…)")
    for engine in sorted(out.glob("*.engine")):
        try:
            info = read_sidecar(engine)
        except InvedgeError:
            continue  # a damaged sidecar: the engine is refused when used, with its own message
        if info is None:
            continue
        built_from = Path(info.onnx_path).name
        if info.checkpoint_sha256 and info.checkpoint_sha256 != checkpoint_sha256:
            why = "built from a model of another checkpoint"
        elif built_from in new and info.key.onnx_sha256 != new[built_from]:
            why = f"built from the {built_from} this export replaced"
        else:
            continue
        remove(engine, why)
        sidecar_path(engine).unlink(missing_ok=True)
    record = out / CALIBRATION_RECORD
    if report.calibration is None and record.exists() and not list(out.glob("model.int8*.onnx")):
        remove(record, "it described INT8 models that are gone")
    return removed
