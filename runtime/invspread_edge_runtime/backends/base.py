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

import numpy as np

from ..metadata import ModelMeta


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "ort-cpu", "ort-cuda", "ort-trt", "trt"
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
