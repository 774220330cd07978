"""Loading engines: an explicit file (checked, never rebuilt) or the cache (rebuilt when stale).

An engine only runs on the TensorRT version and GPU it was built for. The cache compares the
sidecar's key with this device's and rebuilds on any difference or a failed deserialisation; an
engine the user names explicitly is refused with a clear EngineError instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import console
from ..errors import EngineError, InvedgeError
from ..files import sha256_bytes, sha256_file
from ..metadata import ModelMeta, read_model_meta
from . import api, cuda
from .build import PlanCheck, build_engine, check_settings, current_key
from .cache import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MIN_BATCH,
    DEFAULT_WORKSPACE_MB,
    EngineInfo,
    cached_engine_path,
    default_cache_dir,
    read_sidecar,
    sidecar_path,
)

REBUILD_HINT = "Rebuild it on this device: invedge build-engine MODEL.onnx --out {path}"


@dataclass
class LoadedEngine:
    """A deserialised engine, the runtime that owns it (kept alive with it) and its sidecar."""

    engine: Any  # tensorrt.ICudaEngine
    runtime: Any  # tensorrt.Runtime
    info: EngineInfo | None
    status: str  # "cached", "built", "rebuilt", "loaded"


def load_engine(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str] | None = None,
    *,
    trust_engine: bool = False,
) -> LoadedEngine:
    """Load an engine the user named. Its sidecar must match this TensorRT and GPU (and `onnx_path`'s
    content when given); otherwise EngineError saying why and how to rebuild. Never rebuilds.
    It runs where it was built to run: the GPU, or the DLA core its sidecar names (EngineError
    when this device lacks that core).

    An engine without its sidecar is refused unless `trust_engine` (the CLI's --trust-engine): a
    serialized engine is code that TensorRT runs on the GPU, and TensorRT's own guidance is never to
    deserialise one from an untrusted source; the sidecar (written by our build, holding the
    engine's sha256 and what it was built from) is what shows this one is ours.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineError(f"engine file not found: {engine_path}")
    hint = REBUILD_HINT.format(path=engine_path)
    info = read_sidecar(engine_path)
    if info is None and not trust_engine:
        raise EngineError(
            f"{engine_path} has no sidecar ({sidecar_path(engine_path).name}), so nothing shows where it "
            "came from; an engine is code run on the GPU, and TensorRT advises never to load one from an "
            "untrusted source",
            f"{hint}; or pass --trust-engine if you built this file yourself",
        )
    trt, _, gpu = api.open_device()
    data = engine_path.read_bytes()
    if info is None:
        console.warn(
            f"{engine_path} has no sidecar: loaded because of --trust-engine, unchecked for this GPU, "
            "TensorRT and model"
        )
    else:
        reasons = _environment_mismatches(info, trt, gpu)
        if onnx_path is not None and (sha := sha256_file(onnx_path)) != info.key.onnx_sha256:
            reasons.append(f"built from another ONNX file than {onnx_path} (sha256 {sha[:12]}…)")
        if sha256_bytes(data) != info.engine_sha256:
            reasons.append("the engine file does not match its sidecar (damaged, or replaced without it)")
        if reasons:
            raise EngineError(f"{engine_path} cannot be used here: " + "; ".join(reasons), hint)
    runtime, engine = _deserialize(trt, data, info.key.dla_core if info is not None else None)
    if engine is None:
        raise EngineError(f"TensorRT could not deserialise {engine_path} (see its messages above)", hint)
    return LoadedEngine(engine=engine, runtime=runtime, info=info, status="loaded")


def get_or_build_engine(
    onnx_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    precision: str | None = None,
    min_batch: int = DEFAULT_MIN_BATCH,
    opt_batch: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    *,
    meta: ModelMeta | None = None,
    check: PlanCheck | None,
    dla_core: int | None = None,
) -> LoadedEngine:
    """The engine for `onnx_path` on this device: from the cache when its key matches and it
    deserialises, else (re)built into the cache, saying why. `meta`: the ONNX file's metadata when
    the caller has read it (the backend has), else read here, once. `check`, `dla_core`: see
    `build_engine` (a DLA engine has its own cache slot)."""
    onnx_path = Path(onnx_path)
    meta = meta or read_model_meta(onnx_path)
    precision, profile = check_settings(
        meta, str(onnx_path), precision, min_batch, opt_batch, max_batch, workspace_mb, dla_core
    )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    trt, _, gpu = api.open_device()
    key = current_key(onnx_path, precision, profile, trt, gpu, dla_core)
    path = cached_engine_path(cache_dir, onnx_path, key)

    reason = "not built yet for this model, GPU and TensorRT"
    if path.exists():
        reason, loaded = _try_cached(path, key, trt)
        if loaded is not None:
            return loaded
    console.info(f"TensorRT engine {path.name}: {reason}; building it (this takes a while, once)")
    timing = cache_dir / f"timing-{_slug(key.tensorrt_version)}-{_slug(gpu.name)}.cache"
    info = build_engine(
        onnx_path,
        path,
        precision,
        profile.min,
        profile.opt,
        profile.max,
        workspace_mb,
        timing,
        meta=meta,
        check=check,
        dla_core=dla_core,
    )
    runtime, engine = _deserialize(trt, path.read_bytes(), dla_core)
    if engine is None:
        raise EngineError(f"TensorRT could not deserialise the engine it just built ({path})")
    status = "built" if reason.startswith("not built") else "rebuilt"
    return LoadedEngine(engine=engine, runtime=runtime, info=info, status=status)


def _try_cached(path: Path, key: Any, trt: Any) -> tuple[str, LoadedEngine | None]:
    """(why it cannot be used, None) or ("", the loaded engine)."""
    try:
        info = read_sidecar(path)
    except InvedgeError as exc:
        return f"its sidecar is unreadable ({exc.message})", None
    if info is None:
        return "it has no sidecar", None
    if reasons := key.mismatches(info.key):
        return "; ".join(reasons), None
    data = path.read_bytes()
    if sha256_bytes(data) != info.engine_sha256:
        return "the engine file does not match its sidecar", None
    runtime, engine = _deserialize(trt, data, info.key.dla_core)
    if engine is None:
        return "TensorRT could not deserialise it", None
    return "", LoadedEngine(engine=engine, runtime=runtime, info=info, status="cached")


def _environment_mismatches(info: EngineInfo, trt: Any, gpu: cuda.GpuIdentity) -> list[str]:
    here = replace(
        info.key,
        tensorrt_version=api.version(trt),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
    )
    return here.mismatches(info.key)


def _deserialize(trt: Any, data: bytes, dla_core: int | None) -> tuple[Any, Any]:
    """(runtime, engine or None). TensorRT returns None, or raises, for an incompatible plan."""
    runtime = api.make_runtime(trt, dla_core)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError, ValueError):
        engine = None
    return runtime, engine


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
