"""ONNX file → serialized TensorRT engine + JSON sidecar, on the device that will run it.

The network is strongly typed: the ONNX graph carries the precision (fp32, an fp16 graph, or Q/DQ
int8), so there is no calibration here and no precision flag. The batch range becomes one
optimization profile for input `images`; a timing cache makes rebuilds fast.

`dla_core` builds for a Jetson's DLA with GPU fallback: only the fp16 and int8 graphs (the DLA
computes in FP16 and INT8), with a fixed batch (the DLA has no dynamic shapes); the layers TensorRT
reports as not DLA-capable (they run on the GPU) are listed in the sidecar. On TensorRT 10 such a
network is weakly typed with the precision flag of its graph (see `api.network_flags`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import console
from ..bounds import DLA_CORE, ENGINE_MAX_BATCH, ENGINE_MIN_BATCH, ENGINE_OPT_BATCH, WORKSPACE_MB
from ..errors import ConfigError, EngineError, ModelError
from ..files import atomic_write_bytes, sha256_bytes, sha256_file
from ..integrity import check_artifact
from ..metadata import ARTIFACT_FILES, ModelMeta, read_model_meta
from . import api, cuda
from .cache import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MIN_BATCH,
    DEFAULT_WORKSPACE_MB,
    BatchProfile,
    EngineInfo,
    EngineKey,
    check_precision,
    sidecar_path,
    write_sidecar,
)


def resolve_precision(meta: ModelMeta, requested: str | None, source: str) -> str:
    """The engine's precision is the ONNX graph's: check a requested one against it."""
    if meta.precision == "int8-cpu":
        raise ModelError(
            f"{source} is the CPU INT8 artifact (uint8 activations), which TensorRT does not accept",
            "Build the engine from model.int8.onnx (symmetric int8, zero-points 0) in the same export folder",
        )
    if requested is None:
        return check_precision(meta.precision)
    check_precision(requested)
    if requested != meta.precision:
        raise ConfigError(
            f"{source} is a {meta.precision} model; TensorRT takes the precision from the ONNX graph, "
            f"so a {requested} engine needs the {requested} artifact",
            f"Build from {ARTIFACT_FILES[requested]} ('invedge export RUN --{requested}' writes it)"
            if requested != "fp32"
            else f"Pass --precision {meta.precision}, or build from model.onnx",
        )
    return requested


def check_settings(
    meta: ModelMeta,
    source: str,
    precision: str | None = None,
    min_batch: int = DEFAULT_MIN_BATCH,
    opt_batch: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
) -> tuple[str, BatchProfile]:
    """(the engine's precision, its batch profile) for a build of the model `meta` describes, or the
    one-line error a wrong file or setting gets: checked before TensorRT loads and minutes go by."""
    precision = resolve_precision(meta, precision, source)
    profile = check_profile(min_batch, opt_batch, max_batch, workspace_mb, dla_core)
    check_dla_precision(precision, source, dla_core)
    return precision, profile


def check_profile(
    min_batch: int = DEFAULT_MIN_BATCH,
    opt_batch: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
) -> BatchProfile:
    """The batch profile of these settings, or the one-line error for a bad range, workspace or
    DLA core. For the DLA (`dla_core`) the batch is fixed at --max-batch (the DLA has no dynamic
    shapes): --min-batch may be left at its default or equal it, --opt-batch left out or equal it."""
    for bound, value in ((ENGINE_MIN_BATCH, min_batch), (ENGINE_OPT_BATCH, opt_batch),
                         (ENGINE_MAX_BATCH, max_batch), (WORKSPACE_MB, workspace_mb),
                         (DLA_CORE, dla_core)):  # fmt: skip
        if value is not None:
            bound.check(value)
    if dla_core is None:
        return BatchProfile.of(min_batch, opt_batch, max_batch)
    for flag, value, allowed in (("--min-batch", min_batch, (DEFAULT_MIN_BATCH, max_batch)),
                                 ("--opt-batch", opt_batch, (None, max_batch))):  # fmt: skip
        if value not in allowed:
            raise ConfigError(
                f"--dla needs a fixed batch: {flag} {value} differs from --max-batch {max_batch} "
                "(the DLA has no dynamic shapes)",
                f"Leave out {flag}: --max-batch alone sets the batch, smaller calls are padded up to it",
            )
    return BatchProfile(max_batch, max_batch, max_batch)


def check_dla_precision(precision: str, source: str, dla_core: int | None) -> None:
    """The DLA computes in FP16 and INT8 only: an fp32 graph is refused (the core's range is
    `check_profile`'s, whether a device has it `api.check_dla_core`'s)."""
    if dla_core is None:
        return
    if precision == "fp32":
        raise ConfigError(
            f"{source} is an fp32 model; the DLA runs FP16 and INT8 only",
            f"Build from {ARTIFACT_FILES['fp16']} or {ARTIFACT_FILES['int8']} in the same export folder "
            "('invedge export RUN --fp16 --int8' writes them)",
        )


def engine_path_for(onnx_path: str | os.PathLike[str]) -> Path:
    """Where an engine built from `onnx_path` goes by default: beside it, `.onnx` → `.engine`."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".engine")


def current_key(
    onnx_path: Path,
    precision: str,
    profile: BatchProfile,
    trt: Any,
    gpu: cuda.GpuIdentity,
    dla_core: int | None = None,
) -> EngineKey:
    return EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        tensorrt_version=api.version(trt),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
        min_batch=profile.min,
        opt_batch=profile.opt,
        max_batch=profile.max,
        dla_core=dla_core,
    )


# (tensorrt module, serialized plan, its DLA core or None) → the figures for the sidecar, None when
# unchecked; raises on a failing engine. Handed in by whoever opens the model, so the builder never
# imports verification.
PlanCheck = Callable[[Any, bytes, "int | None"], "dict[str, Any] | None"]


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    precision: str | None = None,
    min_batch: int = DEFAULT_MIN_BATCH,
    opt_batch: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: str | os.PathLike[str] | None = None,
    *,
    verbose: bool = False,
    meta: ModelMeta | None = None,
    check: PlanCheck | None,
    dla_core: int | None = None,
) -> EngineInfo:
    """Build a TensorRT engine for this GPU from an exported ONNX file and write it atomically with
    its sidecar (`<engine>.json`). `precision` defaults to the ONNX file's own (from its metadata)
    and must match it. `opt_batch` defaults to `max_batch`. `timing_cache`: a file read if present
    and written back after the build. `meta`: the ONNX file's metadata when the caller has read it
    already (else it is read here, once). `check` runs the new plan before anything is written
    (`verify.engines.probe_plan_check`: the probe set beside the ONNX file); None, which a
    caller must write out, writes it unchecked. `dla_core`: build for that DLA core of a Jetson, with
    GPU fallback (see the module docstring); EngineError on a device without it.
    Raises EngineError / ModelError / MissingDependency, ConfigError for a `precision` that is not the
    ONNX file's, and the check's AccuracyError.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = meta or read_model_meta(onnx_path)
    check_artifact(onnx_path, meta.checkpoint_sha256)  # never compile a damaged artifact into an engine
    precision, profile = check_settings(
        meta, str(onnx_path), precision, min_batch, opt_batch, max_batch, workspace_mb, dla_core
    )

    trt, _, gpu = api.open_device()
    key = current_key(onnx_path, precision, profile, trt, gpu, dla_core)
    started = time.perf_counter()
    data, input_shape, cache, dla = _build_plan(
        trt, onnx_path, meta, precision, profile, workspace_mb, timing_cache, verbose, dla_core
    )
    verified = check(trt, data, dla_core) if check is not None else None  # a failure: nothing is written
    extra: dict[str, Any] = {"dla": dla} if dla else {}
    if verified:
        extra["verify"] = verified
    info = EngineInfo(
        engine_path=engine_path,
        key=key,
        engine_sha256=sha256_bytes(data),
        engine_bytes=len(data),
        input_name=meta.input_name,
        output_name=meta.output_name,
        input_shape=input_shape,
        embedding_dim=meta.embedding_dim,
        checkpoint_sha256=meta.checkpoint_sha256,
        onnx_path=str(onnx_path),
        workspace_mb=workspace_mb,
        build_seconds=round(time.perf_counter() - started, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
    )
    # The old sidecar goes first: an engine without a sidecar is rebuilt, never trusted.
    sidecar_path(engine_path).unlink(missing_ok=True)
    atomic_write_bytes(engine_path, data)
    write_sidecar(info)
    if cache is not None and timing_cache:
        atomic_write_bytes(timing_cache, bytes(memoryview(cache.serialize())))
    return info


def _build_plan(
    trt: Any,
    onnx_path: Path,
    meta: ModelMeta,
    precision: str,
    profile: BatchProfile,
    workspace_mb: int,
    timing_cache: str | os.PathLike[str] | None,
    verbose: bool,
    dla_core: int | None,
) -> tuple[bytes, tuple[int, int, int], Any, dict[str, Any] | None]:
    """Parse, configure and build: (the serialized plan, the input's (C, H, W), the timing cache,
    the DLA placement for the sidecar or None)."""
    logger = api.make_logger(trt, verbose)
    builder = api.make_builder(trt, logger)
    if dla_core is not None:  # a device without that core: one line, before parsing
        api.check_dla_core(trt, dla_core, profile.max, builder)
    network = builder.create_network(api.network_flags(trt, dla=dla_core is not None))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = api.parser_errors(parser)
        raise EngineError(
            f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors[:5] or ["no details"]),
            "Re-export the model with 'invedge export'; TensorRT needs opset >= 13 and int8 zero-points of 0",
        )
    input_shape = _check_io(network, meta, str(onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        meta.input_name,
        (profile.min, *input_shape),
        (profile.opt, *input_shape),
        (profile.max, *input_shape),
    )
    config.add_optimization_profile(opt_profile)
    dla = _configure_dla(trt, config, network, precision, dla_core) if dla_core is not None else None
    cache = _attach_timing_cache(config, Path(timing_cache) if timing_cache else None)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            f"TensorRT could not build an engine from {onnx_path} (see its messages above)",
            "Try a smaller --max-batch or a larger --workspace-mb",
        )
    data = bytes(memoryview(plan))
    return data, input_shape, cache, dla


def _configure_dla(trt: Any, config: Any, network: Any, precision: str, dla_core: int) -> dict[str, Any]:
    """Every layer to the DLA core, with GPU fallback; returns the sidecar's record {"core", "layers",
    "not_dla_capable"} and prints it in one line. The list is TensorRT's answer before the build
    (`can_run_on_DLA`): those layers run on the GPU; the DLA compiler may still move others there
    (TensorRT's build log says so), so it is a floor of what runs on the GPU, not the placement."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    for flag in api.dla_precision_flags(trt, precision):
        config.set_flag(flag)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    gpu = [f"{layer.name} ({layer.type.name})" for layer in layers if not config.can_run_on_DLA(layer)]
    shown = ", ".join(gpu[:5]) + (f", … ({len(gpu) - 5} more)" if len(gpu) > 5 else "")
    console.info(
        f"DLA core {dla_core}: "
        + (
            f"{len(gpu)} of {len(layers)} layers not DLA-capable (TensorRT's can_run_on_DLA), "
            f"they run on the GPU: {shown}"
            if gpu
            else f"all {len(layers)} layers DLA-capable (TensorRT's can_run_on_DLA)"
        )
    )
    return {"core": dla_core, "layers": len(layers), "not_dla_capable": gpu}


def _check_io(network: Any, meta: ModelMeta, source: str) -> tuple[int, int, int]:
    """The parsed network must have our one input (N, 3, H, W) and one output; returns (C, H, W)."""
    expected = (3, meta.image_size, meta.image_size)
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ModelError(
            f"{source} has {network.num_inputs} inputs and {network.num_outputs} outputs; 1 and 1 expected"
        )
    tensor = network.get_input(0)
    if tensor.name != meta.input_name:
        raise ModelError(f"{source}: input is named {tensor.name!r}, its metadata says {meta.input_name!r}")
    dims = tuple(int(d) for d in tensor.shape)
    if len(dims) != 4 or any(d > 0 and d != e for d, e in zip(dims[1:], expected, strict=True)):
        raise ModelError(f"{source}: input shape {dims} does not match (N, {', '.join(map(str, expected))})")
    if dims[0] > 0:
        raise ModelError(
            f"{source} has a fixed batch size {dims[0]}", "Re-export it with a dynamic batch axis"
        )
    output = network.get_output(0)
    out_dims = tuple(int(d) for d in output.shape)
    if output.name != meta.output_name:
        raise ModelError(f"{source}: output is named {output.name!r}, its metadata says {meta.output_name!r}")
    if len(out_dims) != 2 or out_dims[1] not in (-1, meta.embedding_dim):
        raise ModelError(
            f"{source}: output shape {out_dims} does not match (N, {meta.embedding_dim}) of its metadata",
            "Re-export it with 'invedge export RUN_DIR'; a model's metadata must describe its own graph",
        )
    return expected


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    """Load the timing cache (or start an empty one); one made on another GPU is replaced."""
    if path is None:
        return None
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        console.warn(f"timing cache {path} was made for another GPU or TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache
