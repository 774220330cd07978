"""The one interface every inference backend implements.

A backend owns a loaded model and turns a preprocessed batch into embeddings. It knows nothing
of files, images or galleries: `embedder.Embedder` does that on top, preprocessing with the
backend's `meta`. The metadata is read once, from the ONNX file (`metadata.read_model_meta`), and
handed to the backend: `open_backend` passes what it read while choosing the artifact, and a
backend opened directly reads its own ONNX file once. An engine file never stands in for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import NonFiniteError
from ..metadata import ModelMeta
from ..preprocess import normalize


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "ort-cpu", "ort-cuda", "ort-trt", "trt", "triton"
    device: str  # "cpu", "cuda:0 (NVIDIA H100)", ...
    precision: str  # "fp32", "fp16", "int8", "int8-cpu": the artifact's precision
    model_path: str
    max_batch: int | None = None  # None: any batch size


class Backend(ABC):
    """(N, 3, H, W) float32 → (N, d) float32. Inputs larger than the backend's profile are split."""

    meta: ModelMeta  # the ONNX model's metadata: preprocessing, embedding space, I/O names
    info: BackendInfo
    notes: tuple[str, ...] = ()  # how `open_backend` chose this backend and artifact; () when opened directly

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def embed_uint8(self, batch: np.ndarray, finite_only: bool = True) -> np.ndarray:
        """(N, 3, S, S) uint8 images already resized → (N, d) L2-normalised rows: the model's own
        normalisation (`meta`) in front, unit rows behind; NaN or inf raise unless not `finite_only`."""
        vectors = self.infer(normalize(batch, self.meta.mean, self.meta.std))
        if finite_only:
            require_finite(vectors, self.info.model_path)
        return l2_normalize(vectors)

    def synchronize(self) -> None:
        """Wait for queued device work (GPU backends); timing harnesses call this."""

    def last_device_ms(self) -> float | None:
        """Device compute time of the last `infer` (CUDA events, host↔device copies excluded).

        None where the backend records no device time (CPU backends); `invedge bench` shows it.
        """
        return None

    def close(self) -> None:
        """Release sessions, engines and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineCheck(Protocol):
    """Judges an engine that TensorRT just built on this device, before it is kept.

    Handed in by whoever opens the model (`embedder.open_backend` hands in `verify.engines.PROBE_CHECK`),
    so running a model never imports verification. ONNX Runtime's TensorRT provider (`backends.ort`)
    calls it on its session; the native builder (`tensorrt.build`) on its plan, through the adapter
    `backends.trt.plan_check`. A failing engine is never written or reused.
    """

    def has_reference(self, onnx_path: Path, built: str) -> bool:
        """False (after saying so) when there is nothing to check against: the engine `built` by
        backend "trt" or "ort-trt" is kept unchecked."""
        ...

    def __call__(self, backend: Backend, onnx_path: Path) -> dict[str, Any]:
        """The engine's figures (kept in its sidecar); AccuracyError when it fails."""
        ...


def require_finite(vectors: np.ndarray, model: str) -> None:
    """NonFiniteError when a model gave NaN or inf for any image: one such row in an embeddings
    folder or an index makes every search through it meaningless, so none is ever written."""
    bad = int((~np.isfinite(vectors).all(axis=1)).sum())
    if bad:
        raise NonFiniteError(
            f"{Path(model).name or 'the model'} gives NaN or infinite embeddings for {bad} of {len(vectors)} "
            "images: it is broken (exported from diverged weights, or an engine that overflows)",
            "Check it with 'invedge verify EXPORT_FOLDER', and export it again from a checkpoint whose "
            "training did not diverge",
        )


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows to unit length (the models normalise already; INT8/FP16 rounding leaves them slightly off)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))
