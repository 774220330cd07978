"""Does the exported graph compute what PyTorch computes? The runtime's ONNX Runtime CPU backend
vs the nn.Module.

The ONNX side is `invspread_edge_runtime`'s own backend (`open_backend(path, "ort-cpu")`, what
`invedge embed --backend ort-cpu` runs), not a session of its own, so the check tests what ships.
Run on real, preprocessed images at several batch sizes (1 exercises the dynamic axis' edge,
7 an odd size no profile favours). Figures: max abs difference, mean and min cosine similarity.

Before any of that, the weights themselves: `nonfinite_tensors` names the tensors holding NaN or
inf (the one check of a state dict's numbers; training, resume, eval and export all use it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from invspread_edge_runtime.backends.base import Backend
from invspread_edge_runtime.errors import ModelError, NonFiniteError
from invspread_edge_runtime.evaluation.accuracy import cosine_stats

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_BATCH_SIZES = (1, 7)
# the next step after NaN or inf weights or embeddings (the usual cause: a diverged training run)
DIVERGED_HINT = (
    "Use a checkpoint from before its training diverged, or train again with a lower --lr or a milder --aug"
)


@dataclass(frozen=True)
class Tolerance:
    min_cosine: float
    max_abs: float | None = None


TOLERANCES = {
    "fp32": Tolerance(min_cosine=0.99999, max_abs=1e-3),
    "fp16": Tolerance(min_cosine=0.999),
}


@dataclass(frozen=True)
class ParityResult:
    precision: str
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    mean_cosine: float
    min_cosine: float
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        tol = self.tolerance
        ok = self.min_cosine >= tol.min_cosine
        return ok and (tol.max_abs is None or self.max_abs_diff <= tol.max_abs)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity, in order: a diverged
    run's weights (a batch-norm variance of inf still gives finite outputs, so outputs alone miss it)."""
    import torch

    names = [name for name, t in tensors.items() if t.is_floating_point()]
    if not names:
        return []
    # one flag per tensor, read back once (a single device sync for the whole state)
    flags = torch.stack([torch.isfinite(tensors[name]).all() for name in names]).tolist()
    return [name for name, ok in zip(names, flags, strict=True) if not ok]


def name_some(names: Sequence[str], first: int = 3) -> str:
    """'a, b, c and 4 more': the first few of a list, for a one-line error."""
    shown = ", ".join(names[:first])
    return shown + (f" and {len(names) - first} more" if len(names) > first else "")


def tensors_named(names: Sequence[str]) -> str:
    """'3 tensors (a, b, c)': how many, and the first few."""
    return f"{len(names)} tensor{'s' * (len(names) != 1)} ({name_some(names)})"


def require_finite_tensors(
    tensors: dict[str, torch.Tensor], owner: str, what: str = "weights", hint: str = DIVERGED_HINT
) -> None:
    """NonFiniteError naming `owner` (a checkpoint, a model) and its first tensors that hold NaN
    or inf: a model with them embeds everything as NaN (eval would report chance, an index break)."""
    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteError(f"{owner} holds NaN or infinite {what} in {tensors_named(bad)}", hint)


def require_finite_weights(model: nn.Module, what: str) -> None:
    """`require_finite_tensors` of `model`'s state (`what`: the checkpoint's name, for the message)."""
    require_finite_tensors(model.state_dict(), what)


def require_finite_outputs(embeddings: np.ndarray, what: str, of: str = "images in PyTorch") -> None:
    """NonFiniteError when the model's own (PyTorch) embeddings hold NaN or inf: finite weights
    that overflow give a model no export can fix (and a kNN over NaN rows reports chance)."""
    bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
    if bad:
        raise NonFiniteError(
            f"{what} gives NaN or infinite embeddings for {bad} of {len(embeddings)} {of}: its weights overflow",
            DIVERGED_HINT,
        )


def torch_embeddings(model: nn.Module, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """The reference: the nn.Module in eval mode, float32, on the CPU. (N, 3, S, S) → (N, d)."""
    import torch

    model = model.eval().float().cpu()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch]))).numpy())
    return np.concatenate(outs).astype(np.float32)


def cpu_backend(onnx_path: str | os.PathLike[str], threads: int = 0) -> Backend:
    """The runtime's ONNX Runtime CPU backend on `onnx_path` (threads 0: ONNX Runtime's default):
    the one `invedge embed --backend ort-cpu` opens, with its checks of the graph against the
    model's metadata. Close it when done (`with`)."""
    from invspread_edge_runtime.embedder import open_backend

    return open_backend(onnx_path, "ort-cpu", threads=threads)


def infer_in_batches(backend: Backend, inputs: np.ndarray, batch: int) -> np.ndarray:
    """Run `inputs` (N, 3, S, S) float32 through `backend` in calls of `batch` (the last may be
    smaller) → (N, d) float32."""
    outs = [backend.infer(inputs[s : s + batch]) for s in range(0, len(inputs), batch)]
    return np.concatenate(outs).astype(np.float32, copy=False)


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    inputs: np.ndarray,
    *,
    precision: str = "fp32",
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    tolerance: Tolerance | None = None,
    reference: np.ndarray | None = None,
) -> ParityResult:
    """Compare the runtime's ort-cpu backend on `onnx_path` with `model` on `inputs` (N, 3, S, S)
    float32, per batch size.

    `reference` (N, d): the torch embeddings when already computed. The result says whether it
    passed; `require_parity` turns a failure into an error.
    """
    if len(inputs) < max(batch_sizes):
        raise ValueError(f"parity needs at least {max(batch_sizes)} images, got {len(inputs)}")
    expected = torch_embeddings(model, inputs) if reference is None else reference
    max_abs, mean_cos, min_cos = 0.0, 1.0, 1.0
    with cpu_backend(onnx_path) as backend:
        for batch in batch_sizes:
            got = infer_in_batches(backend, inputs, batch)
            if got.shape != expected.shape:
                raise ModelError(
                    f"{Path(onnx_path).name} gives shape {got.shape} at batch {batch}, torch {expected.shape}"
                )
            mean_b, min_b = cosine_stats(expected, got)
            max_abs = max(max_abs, float(np.abs(got - expected).max()))
            mean_cos, min_cos = min(mean_cos, mean_b), min(min_cos, min_b)
    return ParityResult(
        precision=precision,
        images=len(inputs),
        batch_sizes=tuple(batch_sizes),
        max_abs_diff=max_abs,
        mean_cosine=mean_cos,
        min_cosine=min_cos,
        tolerance=tolerance or TOLERANCES[precision],
    )


def require_parity(result: ParityResult, path: str | os.PathLike[str]) -> None:
    """Raise ModelError with the figures when `result` did not pass."""
    if result.passed:
        return
    tol = result.tolerance
    bound = f"cosine ≥ {tol.min_cosine}" + (f", max abs ≤ {tol.max_abs:g}" if tol.max_abs is not None else "")
    raise ModelError(
        f"{Path(path).name} does not match PyTorch ({result.precision}): min cosine {result.min_cosine:.6f}, "
        f"max abs diff {result.max_abs_diff:.2e} (required: {bound})",
        "The file was not kept; report this with INVEDGE_DEBUG=1 output",
    )
