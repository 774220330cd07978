"""A backend checked against the probe set: its embeddings of the probe images vs the FP32 ones.

    probes = load_probe_set("runs/fmnist/export")             # probes.py: read and checked
    with open_backend("runs/fmnist/export", "trt") as backend:
        result = verify_backend(backend, probes)               # preprocessing from backend.meta
    require_pass(result)                                       # VerifyFailed with the figures

Figures, against the FP32 embeddings of the same images: mean and minimum cosine, and top-1
neighbour agreement among the probes (each probe's nearest other probe under FP32 and under the
backend are the same); the verdict compares them with the probe set's thresholds for the
backend's precision. `invedge verify` runs this on an export's artifacts (`export`), engine
builds right after building (`engines`), `invedge bench` on each row (`bench_verdict`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..errors import AccuracyError, ModelError
from ..evaluation.accuracy import cosine_stats, top1_agreement
from ..preprocess import load_uint8
from .probes import FIGURES, ProbeSet, check_space, find_probe_set, load_probe_set


class VerifyFailed(AccuracyError):
    """A backend × artifact whose embeddings of the probe set fall below the stored thresholds."""

    def __init__(self, result: VerifyResult, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.result = result


@dataclass
class VerifyResult:
    precision: str
    backend: str
    device: str
    model_file: str
    probes: int
    mean_cosine: float
    min_cosine: float
    top1_agreement: float  # near-ties count as agreeing (`evaluation.accuracy.top1_agreement`)
    top1_strict: float  # the same neighbour exactly (the export's and the bench's figure)
    thresholds: dict[str, float]
    # NaN or inf outputs (when any), then one per figure below its threshold
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def agreeing(self) -> str:
        """'31/32': probes whose top-1 neighbour agrees ('nan/32' for NaN outputs)."""
        if not np.isfinite(self.top1_agreement):
            return f"nan/{self.probes}"
        return f"{round(self.top1_agreement * self.probes)}/{self.probes}"

    def summary(self) -> str:
        """'mean cos 0.99991, min 0.99902, top-1 agreement 31/32' (the figures, short)."""
        return f"mean cos {self.mean_cosine:.5f}, min {self.min_cosine:.5f}, top-1 agreement {self.agreeing}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN figures (an engine that gave NaN) become None."""
        doc = {**asdict(self), "status": self.status}
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in doc.items()}


# --- a backend on the probes ----------------------------------------------------------------------


def verify_backend(backend: Backend, probes: ProbeSet, *, precision: str | None = None) -> VerifyResult:
    """Embed the probes with `backend` and judge the figures against the thresholds of `precision`
    (default: the backend's). The backend's own `meta` (its ONNX file's) says how to preprocess
    and which embedding space it is in, which must be the probe set's."""
    meta = backend.meta
    precision = precision or backend.info.precision or meta.precision
    check_space(probes, meta, Path(backend.info.model_path).name or "the model")
    emb = embed_probes(backend, probes)
    return measure(
        probes.embeddings,
        emb,
        probes.thresholds_for(precision),
        precision=precision,
        backend=backend.info.name,
        device=backend.info.device,
        model_file=Path(backend.info.model_path).name,
    )


def embed_probes(backend: Backend, probes: ProbeSet) -> np.ndarray:
    """(N, d) L2-normalised embeddings of the probe files by `backend`, decoded and preprocessed as
    `invedge embed` does (`preprocess.load_uint8`, `Backend.embed_uint8`), whatever the backend.
    NaN rows stay: the figures measure them."""
    return backend.embed_uint8(load_uint8(list(probes.paths), backend.meta.image_size), finite_only=False)


# --- the figures and the verdict ------------------------------------------------------------------


def measure(
    reference: np.ndarray,
    candidate: np.ndarray,
    thresholds: dict[str, float],
    *,
    precision: str,
    backend: str = "",
    device: str = "",
    model_file: str = "",
) -> VerifyResult:
    """The figures of `candidate` against `reference` (both (N, d), same images) and the verdict."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if candidate.shape != reference.shape:
        raise ModelError(
            f"the backend gave embeddings of shape {candidate.shape}, {reference.shape} expected"
        )
    nonfinite = int((~np.isfinite(candidate).all(axis=1)).sum())
    if not nonfinite:
        mean_cos, min_cos = cosine_stats(reference, candidate)
        agree = top1_agreement(reference, candidate, ties=True, accepted_cosine=thresholds.get("mean_cosine"))
        strict = top1_agreement(reference, candidate)
    else:  # NaN/inf out of an engine: as wrong as it gets, and said so
        mean_cos = min_cos = agree = strict = float("nan")
    figures = {"mean_cosine": mean_cos, "min_cosine": min_cos, "top1_agreement": agree}
    failures = []
    if nonfinite:
        failures.append(f"NaN or infinite embeddings for {nonfinite} of {len(candidate)} probes")
    for name in FIGURES:
        value, bound = figures[name], thresholds[name]
        if not value >= bound:  # NaN fails too
            failures.append(f"{name.replace('_', ' ')} {value:.5f} < {bound:g}")
    return VerifyResult(
        precision=precision,
        backend=backend,
        device=device,
        model_file=model_file,
        probes=len(reference),
        mean_cosine=mean_cos,
        min_cosine=min_cos,
        top1_agreement=agree,
        top1_strict=strict,
        thresholds=dict(thresholds),
        failures=failures,
    )


def require_pass(result: VerifyResult, what: str | None = None, kept: str = "") -> None:
    """Raise VerifyFailed with the figures and what to try when `result` did not pass."""
    if result.passed:
        return
    what = what or f"{result.model_file} ({result.precision}) on {result.backend}"
    hint = suggestion(result.precision)
    if result.backend == "ort-cpu" and result.failures[0].startswith("NaN"):  # the reference runtime
        hint = "The file itself gives NaN: export it again from a checkpoint whose training did not diverge"
    raise VerifyFailed(
        result,
        f"{what} fails its probe check against FP32: {result.summary()} ({'; '.join(result.failures)})"
        + (f"; {kept}" if kept else ""),
        hint,
    )


def suggestion(precision: str) -> str:
    if precision in ("int8", "int8-cpu"):
        return (
            "Try another precision (--precision fp16), or re-export with another --calib-method "
            "(percentile, entropy) or more --calib-count images"
        )
    if precision in ("fp16", "bf16"):
        return "Try --precision fp32, or another backend (--backend ort-cuda / ort-cpu)"
    return "Try another backend (--backend ort-cpu gives the reference), or another TensorRT version"


# --- invedge bench ----------------------------------------------------------------------------------


def bench_verdict(backend: Backend, source: str | os.PathLike[str], precision: str) -> str | None:
    """'pass 0.99991' / 'fail 0.93120' (mean cosine) for one bench row; None without a probe set."""
    if find_probe_set(source) is None:
        return None
    try:
        probes = load_probe_set(source)
        result = verify_backend(backend, probes, precision=precision)
    except Exception as exc:  # a bench row never dies of its probe check
        return f"error: {str(exc).splitlines()[0][:80] if str(exc) else exc.__class__.__name__}"
    return f"{result.status} {result.mean_cosine:.5f}"
