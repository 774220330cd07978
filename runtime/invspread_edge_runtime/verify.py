"""A backend checked against the probe set: its embeddings of the probe images vs the FP32 ones.

    probes = load_probe_set("runs/fmnist/export")             # probes.py: read and checked
    with open_backend("runs/fmnist/export", "trt") as backend:
        result = verify_backend(backend, probes)               # preprocessing from backend.meta
    require_pass(result)                                       # VerifyFailed with the figures

Figures, against the FP32 embeddings of the same images: mean and minimum cosine, and top-1
neighbour agreement among the probes (each probe's nearest other probe under FP32 and under the
backend are the same); the verdict compares them with the probe set's thresholds for the
backend's precision. `invedge verify` runs this on an export's artifacts (`verify_export`), engine
builds right after building (`engine_checks`), `invedge bench` on each row (`bench_verdict`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .accuracy import cosine_stats, nearest_neighbours
from .backends.base import Backend
from .errors import AccuracyError, ModelError
from .probes import FIGURES, ProbeSet, check_space, find_probe_set, load_probe_set

TIE_FRACTION = 0.1  # top-1 agreement: neighbours this close (share of the similarity spread) are tied


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
    top1_agreement: float  # ties within TIE_FRACTION count as agreeing (see `top1_agreement`)
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
    """(N, d) L2-normalised embeddings of the probe files by `backend`, decoded and preprocessed by
    the runtime's `Embedder` (what `invedge embed` does), whatever the backend."""
    from .embedder import Embedder

    with Embedder(
        _Borrowed(backend), batch_size=len(probes), decode_workers=1, finite_only=False
    ) as embedder:
        return embedder.embed(list(probes.paths))


class _Borrowed(Backend):
    """The caller's backend, lent to an Embedder that must not close it."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.meta, self.info, self.notes = inner, inner.meta, inner.info, inner.notes

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(batch)


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
        agree, strict = top1_agreement(reference, candidate, thresholds.get("mean_cosine"))
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


def top1_agreement(
    reference: np.ndarray, candidate: np.ndarray, accepted_cosine: float | None = None
) -> tuple[float, float]:
    """(tie-aware, strict) top-1 neighbour agreement among the probes.

    Strict: each probe's nearest other probe is the same under both embeddings. Tie-aware: the
    neighbour the candidate picks is, under the reference, the nearest or as near as makes no
    difference: within TIE_FRACTION of that probe's similarity spread (nearest minus median), or
    within what the error `accepted_cosine` allows (the precision's mean-cosine threshold) moves a
    similarity gap. A few dozen probes of ten classes hold near-ties (two shirts equally close to a
    third) whose order flips on any 1e-4 change; an untrained network, whose embeddings all point
    one way (every similarity above 0.999), is all ties. The floor depends on the threshold, never on
    the candidate's own error: a broken engine picks neighbours no nearer than the median and fails.
    """
    sims = (reference @ reference.T).astype(np.float64)
    np.fill_diagonal(sims, np.nan)
    ref_nn = nearest_neighbours(reference, 1)[:, 0]
    cand_nn = nearest_neighbours(candidate, 1)[:, 0]
    rows = np.arange(len(reference))
    best = sims[rows, ref_nn]
    median = np.nanmedian(sims, axis=1)
    tolerance = np.maximum(
        TIE_FRACTION * np.maximum(best - median, 0.0), gap_noise(accepted_cosine, reference)
    )
    tied = sims[rows, cand_nn] >= best - tolerance
    return float(tied.mean()), float((ref_nn == cand_nn).mean())


def gap_noise(accepted_cosine: float | None, reference: np.ndarray) -> float:
    """How far an embedding error at `accepted_cosine` typically moves the gap between two similarities.

    An error of length e = sqrt(2 (1 - cos)) on unit vectors in d dimensions moves a similarity
    a·b by about e·sqrt(2/d) (two independent terms Δa·b and a·Δb, each of spread e/sqrt(d)), and the
    gap between two of them by 2e/sqrt(d): one spread of it. 0 when no threshold is given.
    """
    if accepted_cosine is None or not 0.0 < accepted_cosine < 1.0:
        return 0.0
    error = np.sqrt(2.0 * (1.0 - accepted_cosine))
    return float(2.0 * error / np.sqrt(reference.shape[1]))


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
