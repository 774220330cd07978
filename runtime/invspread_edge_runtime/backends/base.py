"""The one interface every inference backend implements.

A backend owns a loaded model and turns a preprocessed batch into embeddings. It knows nothing
of files, images or galleries: `embed.Embedder` does that on top.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "ort-cpu", "ort-cuda", "ort-trt", "trt"
    device: str  # "cpu", "cuda:0 (NVIDIA H100)", ...
    precision: str  # "fp32", "fp16", "int8", "int8-cpu": the artifact's precision
    model_path: str
    max_batch: int | None = None  # None: any batch size


class Backend(ABC):
    """(N, 3, H, W) float32 → (N, d) float32. Inputs larger than the backend's profile are split."""

    info: BackendInfo

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
