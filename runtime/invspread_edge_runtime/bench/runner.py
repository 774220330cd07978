"""The table runner: one row per runtime × precision × batch size, every row with its status.

A runtime that cannot run here is listed as "not present" with the reason; one that raises is
listed as "failed" with the error; neither stops the others. All runtimes see the same images,
the same preprocessing and the same thread count. Accuracy compares each runtime's embeddings of
the bench images with the FP32 reference's (ONNX Runtime CPU on the FP32 model where possible).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..bounds import BATCH, THREADS
from ..errors import InvedgeError, MissingDependency
from ..evaluation import accuracy
from ..evaluation import protocol as evaluation
from ..preprocess import preprocess_images
from ..verify.backend import bench_verdict
from .harness import TimingPlan, backend_iteration, measure, time_first_call, timed_call
from .images import BenchImages
from .registry import ALL_PRECISIONS, NotPresent, OpenOptions, RuntimeSpec, open_onnx_backend, runtimes
from .resident import resident_call
from .stats import LatencyStats, throughput
from .target import BenchTarget

OK, NOT_PRESENT, FAILED = "ok", "not present", "failed"
REFERENCE_RUNTIME = "ort-cpu"


DEFAULT_BATCHES = (1, 8, 64)


@dataclass
class BenchSettings:
    runtimes: list[str] | None = None  # None: every known runtime
    precisions: list[str] | None = None  # None: what each runtime can run from the target
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    plan: TimingPlan = field(default_factory=TimingPlan)
    threads: int = 0  # 0: every usable core
    accuracy: bool = True

    def check(self) -> None:
        """The one-line error for a runtime, precision, batch or thread count this bench cannot use:
        raised before any work, not after minutes of timing."""
        known = list(runtimes())
        for name in self.runtimes or ():
            if name not in known:
                raise InvedgeError(f"Invalid runtime {name!r}. Only {', '.join(known)} are supported")
        for p in self.precisions or ():
            if p not in ALL_PRECISIONS:
                raise InvedgeError(f"Invalid precision {p!r}. Only {', '.join(ALL_PRECISIONS)} are supported")
        if not self.batches:
            raise InvedgeError("No batch sizes given. Use positive whole numbers, e.g. 1,8,64")
        for batch in self.batches:
            BATCH.check(batch)
        THREADS.check(self.threads)

    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class BenchRow:
    """One line of the table. Latency fields are None unless status is ok."""

    runtime: str
    precision: str | None
    batch: int | None
    status: str
    reason: str | None = None  # why not present
    error: str | None = None  # why failed
    device: str | None = None
    model_file: str | None = None
    size_mb: float | None = None
    load_ms: float | None = None
    first_infer_ms: float | None = None
    cold_start_ms: float | None = None  # load/build + first inference at this batch size
    warmup: int | None = None
    samples: int | None = None
    # the backend call: copies included, preprocessing excluded
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    throughput_ips: float | None = None
    # end to end: preprocessing + copies + compute
    e2e_p50_ms: float | None = None
    e2e_p90_ms: float | None = None
    e2e_p99_ms: float | None = None
    e2e_mean_ms: float | None = None
    e2e_std_ms: float | None = None
    e2e_throughput_ips: float | None = None
    # device compute alone (CUDA events, copies excluded), where the backend records it
    device_p50_ms: float | None = None
    device_p90_ms: float | None = None
    device_p99_ms: float | None = None
    device_mean_ms: float | None = None
    device_std_ms: float | None = None
    device_timing: str | None = None  # how device_* was measured
    # accuracy on the bench images
    cosine_mean: float | None = None
    cosine_min: float | None = None
    top1_agreement: float | None = None
    knn_acc: float | None = None
    recall_at_1: float | None = None
    accuracy_note: str | None = None
    verify: str | None = None  # the probe check of this runtime × precision: "pass 0.99991" (mean cos)

    def record(self) -> dict[str, Any]:
        return {"record": "row", **asdict(self)}


@dataclass
class BenchReport:
    rows: list[BenchRow]
    environment: dict[str, Any]
    settings: dict[str, Any]

    def records(self) -> list[dict[str, Any]]:
        """The --json document: the environment record, then one record per row."""
        env = {"record": "environment", **self.environment, "bench": self.settings}
        return [env, *(row.record() for row in self.rows)]


Log = Callable[[str], None]


def run_bench(
    target: BenchTarget,
    images: BenchImages,
    settings: BenchSettings,
    environment: dict[str, Any] | None = None,
    log: Log | None = None,
) -> BenchReport:
    """Measure every requested runtime × precision × batch on `images`."""
    log = log or (lambda message: None)
    settings.check()
    specs = runtimes()
    names = settings.runtimes or list(specs)
    threads = settings.resolved_threads()
    options = OpenOptions(threads=threads, max_batch=max(settings.batches))
    rows: list[BenchRow] = []
    embeddings: dict[tuple[str, str], np.ndarray] = {}
    for name in names:
        spec = specs[name]
        precisions = settings.precisions or default_precisions(spec, target)
        reason = spec.unavailable(target)
        if reason is None and not precisions:
            have = ", ".join(target.artifacts) or "none"
            reason = f"no artifact it runs in {target.source} (has: {have})"
        if reason is not None:  # one row for the whole runtime, whatever the precisions asked
            rows.append(BenchRow(name, None, None, NOT_PRESENT, reason=reason))
            log(f"{name}: not present ({reason})")
            continue
        for precision in precisions:
            new_rows, emb = _bench_one(spec, target, precision, images, settings, options, log)
            rows.extend(new_rows)
            if emb is not None:
                embeddings[(name, precision)] = emb

    notes: dict[str, Any] = {}
    if settings.accuracy:
        notes = _fill_accuracy(rows, embeddings, target, images, options, log)
    settings_record = {
        "target": str(target.source),
        "target_kind": target.kind,
        "artifacts": {p: str(f) for p, f in target.artifacts.items()},
        "images": len(images),
        "data": images.name,
        "labelled": images.labels is not None,
        "batches": settings.batches,
        "threads": threads,
        "threads_line": threads_line(threads),
        "timing": settings.plan.describe(),
        "latency": "p*_ms: backend call (host↔device copies included, preprocessing excluded); "
        "e2e_*: preprocessing + copies + compute; device_*: compute with copies excluded "
        "(CUDA events, or ONNX Runtime IO binding on the GPU; see device_timing)",
        **notes,
    }
    return BenchReport(rows=rows, environment=environment or {}, settings=settings_record)


def default_precisions(spec: RuntimeSpec, target: BenchTarget) -> list[str]:
    """What a runtime runs when --precision is not given: the target's artifacts it can take."""
    wanted = spec.defaults or spec.precisions
    return [p for p in ALL_PRECISIONS if p in wanted and (not spec.runs_onnx or p in target.artifacts)]


def threads_line(threads: int) -> str:
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
    return (
        f"threads: {threads} intra-op threads for every runtime (ONNX Runtime intra_op_num_threads, "
        f"torch.set_num_threads), runs one at a time; preprocessing on the calling thread"
        + (f"; {env}" if env else "")
    )


# --- one runtime × precision ------------------------------------------------------------------------


def _bench_one(
    spec: RuntimeSpec,
    target: BenchTarget,
    precision: str,
    images: BenchImages,
    settings: BenchSettings,
    options: OpenOptions,
    log: Log,
) -> tuple[list[BenchRow], np.ndarray | None]:
    name = spec.name
    if precision not in spec.precisions:
        reason = f"{name} does not run {precision} (it runs {', '.join(spec.precisions)})"
        log(f"{name} {precision}: not present ({reason})")
        return [BenchRow(name, precision, None, NOT_PRESENT, reason=reason)], None
    t0 = time.perf_counter()
    try:
        backend = spec.factory(target, precision, options)
    except (NotPresent, MissingDependency) as exc:
        log(f"{name} {precision}: not present ({exc})")
        return [BenchRow(name, precision, None, NOT_PRESENT, reason=str(exc))], None
    except Exception as exc:  # any error of any backend: listed, never fatal to the others
        log(f"{name} {precision}: failed to load ({_one_line(exc)})")
        return [BenchRow(name, precision, None, FAILED, error=_one_line(exc))], None
    load_ms = (time.perf_counter() - t0) * 1e3
    rows: list[BenchRow] = []
    emb = None
    try:
        model_file, size_mb = _model_file(backend, target, precision)
        common = dict(device=backend.info.device, model_file=model_file, size_mb=size_mb)

        def preprocess(pils: list) -> np.ndarray:
            return preprocess_images(pils, target.meta)

        for batch in settings.batches:
            row = BenchRow(name, precision, batch, OK, load_ms=load_ms, **common)
            try:
                batches = images.batches(batch)
                first_ms, _ = time_first_call(backend, batches[0], preprocess)
                result = measure(backend_iteration(backend, batches, preprocess), settings.plan)
            except Exception as exc:
                row.status, row.error = FAILED, _one_line(exc)
                log(f"{name} {precision} batch {batch}: failed ({row.error})")
                rows.append(row)
                continue
            _fill_timing(row, first_ms, result)
            if row.device_p50_ms is None:
                _time_resident(row, backend, preprocess(batches[0]), settings.plan, log)
            rows.append(row)
            log(
                f"{name} {precision} batch {batch}: p50 {row.p50_ms:.2f} ms, "
                f"{row.throughput_ips:.0f} img/s, cold start {row.cold_start_ms:.0f} ms"
            )
        if any(r.status == OK for r in rows):  # the export's probe set, where it has one
            verdict = bench_verdict(backend, target.source, precision)
            for row in rows:
                row.verify = verdict
        if settings.accuracy and any(r.status == OK for r in rows):
            try:
                emb = _embed_all(backend, images, target, max(settings.batches))
            except Exception as exc:
                for row in rows:
                    row.accuracy_note = f"embedding the bench images failed: {_one_line(exc)}"
    finally:
        backend.close()
    return rows, emb


def _fill_timing(row: BenchRow, first_ms: float, result: Any) -> None:
    stats = result.stats()
    assert row.batch is not None and row.load_ms is not None
    row.first_infer_ms = first_ms
    row.cold_start_ms = row.load_ms + first_ms
    row.warmup, row.samples = result.warmup_count, result.count
    infer = stats["infer"]
    row.p50_ms, row.p90_ms, row.p99_ms = infer.p50, infer.p90, infer.p99
    row.mean_ms, row.std_ms, row.min_ms, row.max_ms = infer.mean, infer.std, infer.min, infer.max
    row.throughput_ips = throughput(row.batch, infer.mean)
    if (e2e := stats["e2e"]) is not None:
        row.e2e_p50_ms, row.e2e_p90_ms, row.e2e_p99_ms = e2e.p50, e2e.p90, e2e.p99
        row.e2e_mean_ms, row.e2e_std_ms = e2e.mean, e2e.std
        row.e2e_throughput_ips = throughput(row.batch, e2e.mean)
    if (dev := stats["device"]) is not None:
        _fill_device(row, dev, "CUDA events")


def _fill_device(row: BenchRow, dev: LatencyStats, how: str) -> None:
    row.device_p50_ms, row.device_p90_ms, row.device_p99_ms = dev.p50, dev.p90, dev.p99
    row.device_mean_ms, row.device_std_ms = dev.mean, dev.std
    row.device_timing = how


def _time_resident(row: BenchRow, backend: Backend, x: np.ndarray, plan: TimingPlan, log: Log) -> None:
    """ONNX Runtime on a GPU: the same batch with input and output kept on the device."""
    try:
        call = resident_call(backend, x)
        if call is None:
            return
        result = measure(timed_call(call), plan)
    except Exception as exc:  # IO binding unsupported by this build: the row keeps its wall times
        log(f"{row.runtime} {row.precision} batch {row.batch}: no copies-excluded timing ({_one_line(exc)})")
        return
    stats = result.stats()["infer"]
    if stats is not None:
        _fill_device(row, stats, "IO binding on the device, wall time")


def _model_file(backend: Backend, target: BenchTarget, precision: str) -> tuple[str | None, float | None]:
    """The model file this row ran and its size: the ONNX artifact, or what the backend reports."""
    size = getattr(backend, "model_size_bytes", None)
    path = target.artifacts.get(precision) if size is None else None
    path = path or (Path(backend.info.model_path) if backend.info.model_path else None)
    if size is None and path is not None and Path(path).is_file():
        size = os.path.getsize(path)
    return (str(path) if path else backend.info.model_path), (None if size is None else size / 1e6)


def _embed_all(backend: Backend, images: BenchImages, target: BenchTarget, batch: int) -> np.ndarray:
    chunk = min(batch, backend.info.max_batch or batch)
    parts = [np.asarray(backend.infer(x), dtype=np.float32) for x in images.preprocessed(target.meta, chunk)]
    return np.concatenate(parts)


# --- accuracy ---------------------------------------------------------------------------------------


def _fill_accuracy(
    rows: list[BenchRow],
    embeddings: dict[tuple[str, str], np.ndarray],
    target: BenchTarget,
    images: BenchImages,
    options: OpenOptions,
    log: Log,
) -> dict[str, Any]:
    reference, ref_name = _reference(embeddings, target, images, options, log)
    labels = images.labels
    per_model: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, emb in embeddings.items():
        metrics: dict[str, float | None] = {}
        if reference is not None:
            metrics["cosine_mean"], metrics["cosine_min"] = accuracy.cosine_stats(reference, emb)
            metrics["top1_agreement"] = accuracy.top1_agreement(reference, emb)
        if labels is not None and len(np.unique(labels)) > 1:
            items = evaluation.Embedded(emb, labels, 0)
            metrics["knn_acc"] = evaluation.knn_leave_one_out(items, warn=False)  # the k in the notes
            metrics["recall_at_1"] = evaluation.recalls(items, (1,))[1]
        per_model[key] = metrics
    for row in rows:
        if row.status == OK and row.precision is not None:
            for field_name, value in per_model.get((row.runtime, row.precision), {}).items():
                setattr(row, field_name, value)
    notes: dict[str, Any] = {"reference": ref_name}
    if labels is not None:
        k = evaluation.knn_k(labels, exclude_self=True)
        notes["knn"] = f"weighted kNN, leave-one-out over the bench images, k={k}, T={evaluation.KNN_T}"
    return notes


def _reference(
    embeddings: dict[tuple[str, str], np.ndarray],
    target: BenchTarget,
    images: BenchImages,
    options: OpenOptions,
    log: Log,
) -> tuple[np.ndarray | None, str | None]:
    """The FP32 reference embeddings: ONNX Runtime CPU on the FP32 model, else any FP32 row."""
    ref_file = target.reference
    if ref_file is not None:
        if (REFERENCE_RUNTIME, "fp32") in embeddings and target.artifacts.get("fp32") == ref_file:
            return embeddings[(REFERENCE_RUNTIME, "fp32")], f"{ref_file.name} on {REFERENCE_RUNTIME}"
        spec = runtimes()[REFERENCE_RUNTIME]
        if spec.unavailable(target) is None:
            try:
                with open_onnx_backend(REFERENCE_RUNTIME, ref_file, "fp32", options) as backend:
                    emb = _embed_all(backend, images, target, options.max_batch)
                return emb, f"{ref_file.name} on {REFERENCE_RUNTIME}"
            except Exception as exc:
                log(f"FP32 reference on {REFERENCE_RUNTIME} failed: {_one_line(exc)}")
    for (runtime, precision), emb in embeddings.items():
        if precision == "fp32":
            return emb, f"fp32 on {runtime}"
    log("no FP32 reference: cosine and top-1 agreement are left empty")
    return None, None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    first = text.splitlines()[0]
    if not isinstance(exc, InvedgeError):
        first = f"{exc.__class__.__name__}: {first}"
    return first[:300]
