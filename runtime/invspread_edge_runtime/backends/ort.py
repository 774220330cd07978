"""ONNX Runtime backends: CPU, CUDA and the TensorRT execution provider.

- `ort-cpu`: intra-op threads as asked (0: ONNX Runtime's default, one per physical core).
- `ort-cuda`: the CUDA provider on one device.
- `ort-trt`: the TensorRT provider (CUDA as fallback for unsupported nodes), with its engine and
  timing caches on disk (`trt_engine_cache_enable`, `trt_timing_cache_enable`,
  `trt_engine_cache_path`, `trt_timing_cache_path`) and an explicit batch profile
  (`trt_profile_{min,opt,max}_shapes`) so a cached engine matches the next session and batches up
  to `max_batch` never rebuild it. The cache folder is keyed and checked like the native engine
  cache (`ort_cache.py`: ONNX sha256, onnxruntime/TensorRT versions, GPU, precision, profile; a
  sidecar written once the engine has run): an unverified cache is never reused. Precision: a
  Q/DQ INT8 model needs `trt_int8_enable` (no calibration table: the scales are in the graph);
  FP16 is allowed for the layers left in float (`trt_fp16_enable`) for the fp16 and int8
  artifacts. An FP32 artifact stays FP32.

A provider that is listed but cannot start (CUDA libraries missing, no GPU) makes ONNX Runtime fall
back to the CPU silently; that is detected here and reported as an error, so `auto` can move on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AccuracyError, EngineError, MissingDependency, ModelError
from ..files import user_cache_dir
from ..locks import exclusive_lock
from ..metadata import ModelMeta, read_model_meta
from ..tensorrt.cache import DEFAULT_MAX_BATCH
from . import ort_cache
from .base import Backend, BackendInfo, EngineCheck

PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}


def import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependency(
            "onnxruntime",
            "Running an ONNX model",
            "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA/TensorRT; on Jetson, NVIDIA's wheel)",
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    """ONNX Runtime's providers compiled into the installed wheel (not a promise that they start)."""
    try:
        return list(import_ort().get_available_providers())
    except MissingDependency:
        return []


def default_cache_dir(model_path: Path) -> Path:
    """Beside the model when that folder is writable (engines travel with the export), else ~/.cache."""
    folder = model_path.parent / ".ort-trt-cache"
    if os.access(model_path.parent, os.W_OK):
        return folder
    return user_cache_dir("ort-trt")


def trt_provider_options(
    meta: ModelMeta,
    cache_dir: Path,
    max_batch: int = DEFAULT_MAX_BATCH,
    opt_batch: int | None = None,
    device_id: int = 0,
    workspace_bytes: int = 2 << 30,
) -> dict[str, Any]:
    """The TensorRT provider's options for one of our models (see the module docstring)."""
    shape = f"3x{meta.image_size}x{meta.image_size}"
    opt_batch = min(max_batch, opt_batch or max_batch)
    name = meta.input_name
    return {
        "device_id": device_id,
        "trt_max_workspace_size": workspace_bytes,
        "trt_fp16_enable": meta.precision in ("fp16", "int8"),
        "trt_int8_enable": meta.precision == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": f"{name}:1x{shape}",
        "trt_profile_opt_shapes": f"{name}:{opt_batch}x{shape}",
        "trt_profile_max_shapes": f"{name}:{max_batch}x{shape}",
    }


def check_graph_io(path: Path, meta: ModelMeta, inputs: list[Any], outputs: list[Any]) -> None:
    """The graph's tensors (ONNX Runtime's NodeArg: name, shape, type) must be what its metadata
    says: one input `meta.input_name` of (N, 3, S, S) and one output `meta.output_name` of (N, d),
    float32 or float16. A model whose metadata lies would be fed wrongly sized images, or give
    vectors of another length than its embedding space; it is refused here with one line."""
    size, dim = meta.image_size, meta.embedding_dim
    said = f"its metadata says input {meta.input_name!r} (N, 3, {size}, {size}), output {meta.output_name!r} (N, {dim})"
    hint = "Re-export it with 'invedge export RUN_DIR'; a model's metadata must describe its own graph"

    def refuse(what: str) -> ModelError:
        return ModelError(f"{path.name}: the graph {what}, but {said}", hint)

    if len(inputs) != 1 or len(outputs) != 1:
        raise refuse(f"has {len(inputs)} inputs and {len(outputs)} outputs (1 and 1 expected)")
    inp, out = inputs[0], outputs[0]
    in_shape, out_shape = list(inp.shape or []), list(out.shape or [])
    if inp.name != meta.input_name:
        raise refuse(f"input is named {inp.name!r}")
    if out.name != meta.output_name:
        raise refuse(f"output is named {out.name!r}")
    for tensor, kind in ((inp, "input"), (out, "output")):
        if tensor.type not in ("tensor(float)", "tensor(float16)"):
            raise refuse(f"{kind} is {tensor.type} (float32 or float16 expected)")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in in_shape]  # None: a symbolic axis
    if len(fixed) != 4 or any(d not in (None, e) for d, e in zip(fixed[1:], (3, size, size), strict=True)):
        raise refuse(f"input has shape {_shape(in_shape)}")
    last = out_shape[-1] if out_shape else None  # a graph may leave its output's shape unknown: []
    if out_shape and (len(out_shape) != 2 or (isinstance(last, int) and last > 0 and last != dim)):
        raise refuse(f"output has shape {_shape(out_shape)}")


def _shape(dims: list[Any]) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims) + ")"


class OrtBackend(Backend):
    """One ONNX Runtime session for one of our exported models.

    `meta`: the model's metadata when the caller has read it (`open_backend` has), else read from
    `model_path` here, once.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        kind: str = "ort-cpu",
        threads: int = 0,
        device_id: int = 0,
        max_batch: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        meta: ModelMeta | None = None,
        check: EngineCheck | None = None,
    ) -> None:
        self._check = check  # ort-trt: judges the provider's new engine (see EngineCheck); None: unchecked
        self._cache_key: ort_cache.OrtTrtKey | None = None
        self.cache_status: str | None = None  # ort-trt: "cached", "new", or why the cache was emptied
        # ort-trt: the cache slot's lock is held until its engine is built, has run and is keyed
        with contextlib.ExitStack() as self._guard:
            self._init(model_path, kind, threads, device_id, max_batch, cache_dir, meta)
            # ort-trt: the provider may build at the first run, so run once, then record the slot;
            # a cached slot's sidecar was just checked to name this key and these files
            if self._cache_key is not None and self._cache_dir is not None and self.cache_status != "cached":
                size = self.meta.image_size
                self.infer(np.zeros((1, 3, size, size), np.float32))
                ort_cache.write_slot_sidecar(self._cache_dir, self._cache_key)

    def _init(
        self,
        model_path: str | os.PathLike[str],
        kind: str,
        threads: int,
        device_id: int,
        max_batch: int | None,
        cache_dir: str | os.PathLike[str] | None,
        meta: ModelMeta | None,
    ) -> None:
        if kind not in PROVIDERS:
            raise ValueError(
                f"Invalid ONNX Runtime backend {kind!r}. Only {', '.join(PROVIDERS)} are supported."
            )
        ort = import_ort()
        path = Path(model_path)
        self.meta = meta or read_model_meta(path)  # raises ModelError for a model that is not ours
        provider = PROVIDERS[kind]
        if provider not in ort.get_available_providers():
            raise EngineError(
                f"{kind} is not available: this onnxruntime has no {provider}",
                "Install onnxruntime-gpu (x86) or NVIDIA's Jetson wheel, or use --backend ort-cpu",
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the CLI speaks for us
        # Idle intra-op threads sleep instead of spinning: ours always share the cores with image
        # decoding (the Embedder's threads, the service's event loop), which spinning starves. On 2
        # cores: offline 1.4x and served 1.6x the images/s of spinning (benchmarks/serve_load.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._cache_dir: Path | None = None
        if kind == "ort-trt":
            max_batch = max_batch or DEFAULT_MAX_BATCH
            providers = self._trt_providers(ort, path, max_batch, cache_dir, device_id)
            cache_before = ort_cache.listing(self._cache_dir)  # what this session's engine build adds
        elif kind == "ort-cuda":
            providers = [(provider, {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own (unexported) exception types
            if not path.is_file():
                raise ModelError(f"model file not found: {path}") from exc
            raise EngineError(f"{kind} could not load {path.name}: {str(exc).splitlines()[0]}") from exc
        if provider not in self.session.get_providers():
            raise EngineError(
                f"{kind} is listed by onnxruntime but could not start (fell back to the CPU)",
                "Check the CUDA/cuDNN/TensorRT libraries match this onnxruntime-gpu build",
            )
        check_graph_io(path, self.meta, self.session.get_inputs(), self.session.get_outputs())
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self.session.get_outputs()[0].name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        static_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self._max_batch = static_batch or (max_batch if kind == "ort-trt" else None)
        device = "cpu" if kind == "ort-cpu" else f"cuda:{device_id}"
        self.info = BackendInfo(
            name=kind,
            device=device,
            precision=self.meta.precision,
            model_path=str(path),
            max_batch=self._max_batch,
        )
        if kind == "ort-trt" and self._cache_dir is not None:
            self._check_engine(path, self._cache_dir, cache_before)

    def _check_engine(self, path: Path, slot: Path, before: dict[str, int]) -> None:
        """The provider builds its engine at session creation or at the first run (which the check's
        is) into the cache slot, whose sidecar is written only after this passed. On a failure the
        slot is emptied, so no engine of it is ever reused, and the AccuracyError goes on."""
        if self._check is None or not self._check.has_reference(path, "ort-trt"):
            return
        try:
            self._check(self, path)
        except AccuracyError:
            self.close()
            ort_cache.empty_failed_slot(slot, before)
            raise

    def _trt_providers(
        self, ort: Any, path: Path, max_batch: int, cache_dir: str | os.PathLike[str] | None, device_id: int
    ) -> list[Any]:
        """The TensorRT provider on this model's cache slot, locked until its engine is checked."""
        base = Path(cache_dir) if cache_dir else default_cache_dir(path)
        keyed = trt_provider_options(self.meta, base, max_batch, device_id=device_id)
        self._cache_key = ort_cache.current_key(path, self.meta.precision, keyed, ort.__version__, device_id)
        self._cache_dir = ort_cache.slot_dir(base, path, self._cache_key)
        self._guard.enter_context(exclusive_lock(self._cache_dir, "TensorRT provider cache"))
        self.cache_status = ort_cache.prepare_slot(self._cache_dir, self._cache_key)  # never unverified
        trt_options = trt_provider_options(self.meta, self._cache_dir, max_batch, device_id=device_id)
        return [
            ("TensorrtExecutionProvider", trt_options),
            ("CUDAExecutionProvider", {"device_id": device_id}),
            "CPUExecutionProvider",
        ]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 → (N, d) float32; batches beyond the profile's maximum are split."""
        size = self.meta.image_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ModelError(f"expected input (N, 3, {size}, {size}), got {tuple(batch.shape)}")
        batch = np.ascontiguousarray(batch, dtype=self._input_dtype)
        step = self._max_batch or max(len(batch), 1)
        outputs = [
            self.session.run([self._output_name], {self._input_name: batch[i : i + step]})[0]
            for i in range(0, len(batch), step)
        ]
        if not outputs:
            return np.zeros((0, self.meta.embedding_dim), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
