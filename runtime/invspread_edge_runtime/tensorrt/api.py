"""The TensorRT Python API as this package uses it: imported lazily, version differences in one place.

Supported: TensorRT 10.x (10.3 is JetPack 6's) and 11.x. Precision lives in the ONNX graph (Q/DQ for
int8, an fp16 graph for fp16), so every network is strongly typed and no precision builder flag is
ever set: TensorRT 10 rejects them on a strongly typed network, TensorRT 11 no longer has them.
The one exception is a DLA build on TensorRT 10 (`network_flags`, `dla_precision_flags`): its DLA
takes precision from the flags, so the network is weakly typed with the flag of the graph's precision.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import EngineError, MissingDependency
from .cuda import CudaRuntime, GpuIdentity

INSTALL_HINT = (
    "pip install tensorrt-cu12 (x86 servers); on a Jetson, JetPack ships the TensorRT Python bindings "
    "(sudo apt install python3-libnvinfer)"
)


def import_tensorrt() -> ModuleType:
    """`import tensorrt`, or a clear error saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependency("tensorrt", "The native TensorRT backend", INSTALL_HINT) from exc
    except OSError as exc:  # the bindings are there but libnvinfer is not
        raise EngineError(
            f"TensorRT is installed but its libraries cannot be loaded ({exc})", INSTALL_HINT
        ) from exc
    return tensorrt


def open_device() -> tuple[ModuleType, CudaRuntime, GpuIdentity]:
    """(tensorrt, the CUDA runtime, the current GPU), each checked in that order, so the error names
    the first thing missing that the user can act on: the tensorrt package (MissingDependency with
    how to install it), then cuda-python, then a GPU and its driver (EngineError). cuda-python alone
    proves little (torch's CUDA wheels bring it to machines without a GPU or TensorRT)."""
    trt = import_tensorrt()
    cuda = CudaRuntime()
    return trt, cuda, cuda.gpu()


def version(trt: ModuleType) -> str:
    return str(trt.__version__)


def has_weak_typing(trt: ModuleType) -> bool:
    """TensorRT <= 10 still builds weakly typed networks unless asked not to; 11 removed weak typing
    together with its precision flags, so the presence of `BuilderFlag.FP16` tells them apart."""
    return hasattr(trt.BuilderFlag, "FP16")


def network_flags(trt: ModuleType, dla: bool = False) -> int:
    """Creation flags for a strongly typed network (for a DLA build on TensorRT 10: a weakly typed one).

    TensorRT 10 must be asked (`STRONGLY_TYPED`); TensorRT 11 networks are always strongly typed and
    its `STRONGLY_TYPED` is deprecated and ignored, so nothing is passed there. TensorRT 10's DLA
    takes its precision from builder flags (`dla_precision_flags`), which a strongly typed network
    refuses, so a DLA network on 10 is weakly typed, as trtexec's `--useDLACore` builds it.
    """
    if has_weak_typing(trt) and not dla:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def dla_precision_flags(trt: ModuleType, precision: str) -> list[Any]:
    """The builder flags a DLA build of a `precision` graph needs: the DLA computes in FP16 or INT8.

    TensorRT 10 (weakly typed): FP16 for an fp16 graph; INT8 for a Q/DQ graph, with FP16 so its
    unquantized layers can stay on the DLA. TensorRT 11: none (removed; the graph's types decide).
    """
    if not has_weak_typing(trt):
        return []
    if precision == "int8":
        return [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]
    return [trt.BuilderFlag.FP16]


def make_logger(trt: ModuleType, verbose: bool = False) -> Any:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def make_builder(trt: ModuleType, logger: Any) -> Any:
    """A Builder, or the one-line EngineError when TensorRT cannot make one (no GPU visible)."""
    try:
        return trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        raise EngineError(
            f"TensorRT could not create a builder ({exc})", "Is an NVIDIA GPU visible?"
        ) from exc


def check_dla_core(trt: ModuleType, dla_core: int, max_batch: int, builder: Any = None) -> None:
    """The one-line error for a device without DLA core `dla_core`, or whose DLA takes a smaller
    batch than `max_batch`: asked before any build work (`builder`: the build's own, else one made
    here just to ask)."""
    builder = builder if builder is not None else make_builder(trt, make_logger(trt))
    cores = int(builder.num_DLA_cores)
    if cores == 0:
        raise EngineError(f"this GPU has no DLA (DLA cores: {cores})", "Build without --dla")
    if dla_core >= cores:
        raise EngineError(
            f"--dla {dla_core}: this device has {_cores(cores)}",
            f"Use --dla 0{f' to {cores - 1}' if cores > 1 else ''}",
        )
    limit = int(builder.max_DLA_batch_size)
    if max_batch > limit:
        raise EngineError(
            f"--max-batch {max_batch}: this device's DLA takes batches of at most {limit}",
            f"Use --max-batch {limit} or less with --dla",
        )


def make_runtime(trt: ModuleType, dla_core: int | None = None) -> Any:
    """A Runtime to deserialise an engine with; one built for a DLA core needs that core set first
    (the runtime's own default, -1, is the GPU), and refused in one line on a device without it
    (an engine for DLA core 1 on an Orin with one core)."""
    runtime = trt.Runtime(make_logger(trt))
    if dla_core is not None:
        cores = int(runtime.num_DLA_cores)
        if dla_core >= cores:
            raise EngineError(
                f"the engine runs on DLA core {dla_core}; this device has {_cores(cores)}",
                "Rebuild it on this device: invedge build-engine MODEL.onnx "
                + (f"--dla {cores - 1} (or without --dla)" if cores else "(without --dla)"),
            )
        runtime.DLA_core = dla_core
    return runtime


def _cores(count: int) -> str:
    return "no DLA core" if count == 0 else f"{count} DLA core{'s' if count > 1 else ''}"


def parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's errors as one line each: node, operator, description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = err.node_name() or (f"node {err.node()}" if err.node() >= 0 else "")
        op = err.node_operator()
        prefix = f"{where} ({op}): " if where and op else (f"{where}: " if where else "")
        lines.append(f"{prefix}{err.desc()}")
    return lines


def numpy_dtype(trt: ModuleType, dtype: Any) -> Any:
    import numpy as np

    return np.dtype(trt.nptype(dtype))
