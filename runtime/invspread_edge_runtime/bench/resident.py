"""Copies excluded, for ONNX Runtime on a GPU: the input bound on the device once, output left there.

ONNX Runtime's CUDA and TensorRT providers offer no CUDA events to a Python caller, but IO binding
keeps the tensors on the GPU, and `run_with_iobinding` returns once the device is done. Its wall
time is the compute with no host↔device copy: the `device_*` columns of those rows. Backends with
their own CUDA events (`Backend.last_device_ms`) are timed by those instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends.base import Backend


def resident_call(
    backend: Backend, batch: np.ndarray, device: str | None = None
) -> Callable[[], None] | None:
    """A call that runs `batch` with input and output on the device; None when the backend has no
    ONNX Runtime session on a GPU. `device` ("cuda:0", "cpu") overrides the backend's own (tests)."""
    session: Any = getattr(backend, "session", None)
    if session is None or not hasattr(session, "io_binding"):
        return None
    kind, _, index = (device or backend.info.device).partition(":")
    if kind != "cuda" and not (device is not None and kind == "cpu"):
        return None  # on the CPU there is no copy to exclude
    import onnxruntime as ort

    device_id = int(index.split()[0]) if index else 0
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch, dtype=dtype), kind, device_id)
    binding = session.io_binding()
    binding.bind_ortvalue_input(inp.name, value)
    binding.bind_output(out.name, kind, device_id)

    def call() -> None:
        session.run_with_iobinding(binding)

    return call
