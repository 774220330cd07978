"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python.

cuda-python has two layouts: `cuda.bindings.runtime` (cuda-bindings >= 12.6.1, and the only one in
13.x) and the older `cuda.cudart` (cuda-python <= 12.6.0, deprecated later). Both return a tuple
`(cudaError_t, *values)` from every call; `CudaRuntime.call` turns a failure into an EngineError.
The functions used here have the same names and arguments in both (cudaEventElapsedTime(start, end)
returns `(err, ms)` in 12.x and 13.x alike; 13.x dropped only the `_v2` alias).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import EngineError, MissingDependency


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python <= 12.6.0
        except ImportError as exc:
            raise MissingDependency(
                "cuda-python", "The native TensorRT backend (device memory and streams)"
            ) from exc
    return cudart


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    name: str
    compute_capability: str  # "8.7"

    def __str__(self) -> str:
        return f"cuda:{self.index} ({self.name}, sm {self.compute_capability})"


class CudaRuntime:
    """A thin, checked wrapper over the cuda-python runtime module."""

    def __init__(self, cudart: ModuleType | None = None) -> None:
        self.rt = cudart if cudart is not None else import_cudart()

    def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise EngineError(f"CUDA {name} failed: {self._describe(err)}", _hint(err))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def _describe(self, err: Any) -> str:
        name = getattr(err, "name", str(err))
        try:
            _, text = self.rt.cudaGetErrorString(err)
            return f"{name} ({text.decode() if isinstance(text, bytes) else text})"
        except Exception:  # the message is a courtesy; never hide the error code behind another error
            return name

    def gpu(self) -> GpuIdentity:
        """The current device: its name and compute capability go into every engine's cache key."""
        count = self.call("cudaGetDeviceCount")
        if not count:
            raise EngineError("no CUDA GPU found", "TensorRT engines need an NVIDIA GPU")
        index = int(self.call("cudaGetDevice"))
        prop = self.call("cudaGetDeviceProperties", index)
        raw = prop.name
        name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return GpuIdentity(index=index, name=name.strip(), compute_capability=f"{prop.major}.{prop.minor}")

    # --- memory and streams ------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", nbytes))

    def free(self, ptr: int) -> None:
        self.call("cudaFree", ptr)

    def stream_create(self) -> Any:
        return self.call("cudaStreamCreate")

    def stream_synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        assert src.flags.c_contiguous
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        assert dst.flags.c_contiguous
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    # --- events: device time between two points of a stream, host↔device copies left out -------

    def event_create(self) -> Any:
        """A timing event (cudaEventDefault: timing enabled)."""
        return self.call("cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self.call("cudaEventRecord", event, stream)

    def event_synchronize(self, event: Any) -> None:
        self.call("cudaEventSynchronize", event)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded, completed events (about 0.5 µs resolution)."""
        return float(self.call("cudaEventElapsedTime", start, end))

    def event_destroy(self, event: Any) -> None:
        self.call("cudaEventDestroy", event)


def _hint(err: Any) -> str | None:
    name = getattr(err, "name", "")
    if name in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice"):
        return "This machine has no usable NVIDIA GPU/driver; use --backend ort-cpu"
    if name == "cudaErrorMemoryAllocation":
        return "Lower --max-batch, or free GPU memory"
    return None
