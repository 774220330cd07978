"""Native TensorRT backend: the engine is built from the ONNX file on first use and cached.

Device memory and the stream come from cuda-python; inference is TensorRT's tensor API
(`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Any batch size within the engine's
optimization profile runs as is; larger inputs are split into profile-sized chunks. Two CUDA events
recorded on the backend's stream around each chunk's `execute_async_v3` give `last_device_ms()`:
the engine's device time, host↔device copies left out, summed over the chunks of the last call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, ModelError
from ..metadata import ModelMeta, read_model_meta
from ..tensorrt import api
from ..tensorrt.build import PlanCheck
from ..tensorrt.cache import DEFAULT_MAX_BATCH, DEFAULT_MIN_BATCH, DEFAULT_WORKSPACE_MB
from ..tensorrt.load import LoadedEngine, get_or_build_engine, load_engine
from .base import Backend, BackendInfo, EngineCheck


class TensorRTBackend(Backend):
    """(N, 3, H, W) float32 → (N, d) float32 with a TensorRT engine for this GPU.

    `precision` defaults to the ONNX file's own; `cache_dir` holds engines and timing caches
    (default: $INVEDGE_ENGINE_CACHE or ~/.cache/invspread-edge/engines). `engine_path` runs an
    explicit engine instead (checked against its sidecar, never rebuilt); one without a sidecar is
    refused unless `trust_engine` (see `tensorrt.load.load_engine`: engines are code for the GPU).
    `meta`: the ONNX file's metadata when the caller has read it (`open_backend` has), else read
    here, once; it is always the ONNX file's, also when an engine file runs. `check` judges an
    engine built here before it is cached (see `base.EngineCheck`); None, which callers write out on
    purpose, caches it unchecked. `dla_core`: the engine built here runs on that DLA core of a Jetson
    (GPU fallback for the rest; its own cache slot); an explicit engine runs where it was built for.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        precision: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        min_batch: int = DEFAULT_MIN_BATCH,
        opt_batch: int | None = None,
        workspace_mb: int = DEFAULT_WORKSPACE_MB,
        engine_path: str | os.PathLike[str] | None = None,
        loaded: LoadedEngine | None = None,  # an engine already deserialised (the build's probe check)
        trust_engine: bool = False,
        meta: ModelMeta | None = None,
        check: EngineCheck | None,
        dla_core: int | None = None,
    ) -> None:
        self._buffers: list[int] = []
        self._stream: Any = None
        self._events: list[Any] = []  # [start, stop], reused by every chunk
        self._device_ms: float | None = None
        self.context: Any = None
        self.meta = meta = meta or read_model_meta(onnx_path)
        trt, self.cuda, self.gpu = api.open_device()  # the missing tensorrt package is named first
        if loaded is not None:
            self.loaded: LoadedEngine = loaded
        elif engine_path is not None:
            self.loaded = load_engine(engine_path, onnx_path=onnx_path, trust_engine=trust_engine)
        else:
            self.loaded = get_or_build_engine(
                onnx_path,
                cache_dir,
                precision,
                min_batch,
                opt_batch,
                max_batch,
                workspace_mb,
                meta=meta,
                check=None if check is None else plan_check(check, onnx_path, meta),
                dla_core=dla_core,
            )
        engine = self.loaded.engine
        try:
            self.input_name, self.output_name = _io_names(trt, engine)
            for name in (self.input_name, self.output_name):
                if api.numpy_dtype(trt, engine.get_tensor_dtype(name)) != np.float32:
                    raise ModelError(
                        f"engine tensor {name!r} is not float32; the export keeps I/O in float32"
                    )
            lo, _, hi = (
                tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(self.input_name, 0)
            )
            self.min_batch, self.max_batch = lo[0], hi[0]
            self.chw: tuple[int, ...] = hi[1:]
            self.dim = int(tuple(engine.get_tensor_shape(self.output_name))[-1])
            if self.dim <= 0:
                self.dim = meta.embedding_dim
            _check_engine_io(self, meta, Path(engine_path or onnx_path))
            self.context = engine.create_execution_context()
            if self.context is None:
                raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
            self._stream = self.cuda.stream_create()
            for _ in range(2):
                self._events.append(self.cuda.event_create())
            itemsize = np.dtype(np.float32).itemsize
            self._d_in = self._alloc(self.max_batch * int(np.prod(self.chw)) * itemsize)
            self._d_out = self._alloc(self.max_batch * self.dim * itemsize)
            for name, ptr in ((self.input_name, self._d_in), (self.output_name, self._d_out)):
                if not self.context.set_tensor_address(name, ptr):
                    raise EngineError(f"TensorRT refused the device address of tensor {name!r}")
        except BaseException:
            self.close()
            raise
        key = self.loaded.info.key if self.loaded.info is not None else None
        self.info = BackendInfo(
            name="trt",
            device=str(self.gpu) if key is None or key.dla_core is None else f"{key.device} · {self.gpu}",
            precision=meta.precision,
            model_path=str(Path(engine_path or onnx_path)),
            max_batch=self.max_batch,
        )

    def _alloc(self, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes)
        self._buffers.append(ptr)
        return ptr

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.chw:
            raise ModelError(
                f"input of shape {x.shape} does not fit the engine's (N, {', '.join(map(str, self.chw))})"
            )
        self._device_ms = None  # a failed call leaves no stale time behind
        start_event, stop_event = self._events
        device_ms = 0.0
        out = np.empty((len(x), self.dim), dtype=np.float32)
        for start in range(0, len(x), self.max_batch):
            chunk = x[start : start + self.max_batch]
            rows = len(chunk)
            if rows < self.min_batch:  # below the profile: pad with zeros, keep the real rows
                chunk = np.concatenate([chunk, np.zeros((self.min_batch - rows, *self.chw), np.float32)])
            if not self.context.set_input_shape(self.input_name, tuple(chunk.shape)):
                raise EngineError(
                    f"TensorRT refused input shape {tuple(chunk.shape)} for {self.input_name!r}"
                )
            self.cuda.copy_to_device(self._d_in, chunk, self._stream)
            self.cuda.event_record(start_event, self._stream)
            if not self.context.execute_async_v3(int(self._stream)):
                raise EngineError("TensorRT inference failed (execute_async_v3 returned False)")
            self.cuda.event_record(stop_event, self._stream)
            self.cuda.copy_to_host(out[start : start + rows], self._d_out, self._stream)
            self.cuda.stream_synchronize(self._stream)
            self.cuda.event_synchronize(stop_event)
            device_ms += self.cuda.event_elapsed_ms(start_event, stop_event)
        self._device_ms = device_ms
        return out

    def last_device_ms(self) -> float | None:
        """Device time of the last `infer` (CUDA events around each chunk's execute_async_v3, summed;
        copies excluded); 0.0 for an empty batch, None before the first call or after a failed one."""
        return self._device_ms

    def synchronize(self) -> None:
        if self._stream is not None:
            self.cuda.stream_synchronize(self._stream)

    def close(self) -> None:
        """Free device memory, the events and the stream; safe to call twice."""
        self.context = None
        while self._buffers:
            self.cuda.free(self._buffers.pop())
        while self._events:
            self.cuda.event_destroy(self._events.pop())
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self.cuda.stream_destroy(stream)
        if hasattr(self, "loaded"):
            self.loaded.engine = None


def plan_check(check: EngineCheck, onnx_path: str | os.PathLike[str], meta: ModelMeta) -> PlanCheck:
    """`check` as the native builder runs it: on the serialized plan, before it is written."""

    def run(trt: Any, plan: bytes, dla_core: int | None = None) -> dict[str, Any] | None:
        if not check.has_reference(Path(onnx_path), "trt"):
            return None
        runtime = api.make_runtime(trt, dla_core)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"TensorRT could not deserialise the engine it just built from {onnx_path}")
        backend = TensorRTBackend(
            onnx_path, loaded=LoadedEngine(engine, runtime, None, "built"), meta=meta, check=None
        )
        try:
            return check(backend, Path(onnx_path))
        finally:
            backend.close()

    return run


def _io_names(trt: Any, engine: Any) -> tuple[str, str]:
    """The engine's one input and one output tensor, by I/O mode."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"engine has inputs {inputs} and outputs {outputs}; one of each expected")
    return inputs[0], outputs[0]


def _check_engine_io(backend: TensorRTBackend, meta: ModelMeta, source: Path) -> None:
    """The engine's tensors must be what the ONNX file's metadata says (name, (N, 3, S, S), (N, d)):
    an engine of another model, or a model whose metadata lies, is refused with one line."""
    size, dim = meta.image_size, meta.embedding_dim
    problems = []
    if backend.input_name != meta.input_name:
        problems.append(f"input is named {backend.input_name!r}, not {meta.input_name!r}")
    if backend.output_name != meta.output_name:
        problems.append(f"output is named {backend.output_name!r}, not {meta.output_name!r}")
    if tuple(backend.chw) != (3, size, size):
        problems.append(f"input is (N, {', '.join(map(str, backend.chw))}), not (N, 3, {size}, {size})")
    if backend.dim != dim:
        problems.append(f"output is (N, {backend.dim}), not (N, {dim})")
    if problems:
        raise ModelError(
            f"{source.name} does not match its model's metadata: {'; '.join(problems)}",
            "Rebuild the engine from the model it serves: invedge build-engine MODEL.onnx",
        )
