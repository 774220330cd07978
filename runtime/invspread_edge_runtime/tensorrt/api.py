"""The TensorRT Python API as this package uses it: imported lazily, version differences in one place.

Supported: TensorRT 10.x (10.3 is JetPack 6's) and 11.x. Precision lives in the ONNX graph (Q/DQ for
int8, an fp16 graph for fp16), so every network is strongly typed and no precision builder flag is
ever set: TensorRT 10 rejects them on a strongly typed network, TensorRT 11 no longer has them.
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


def network_flags(trt: ModuleType) -> int:
    """Creation flags for a strongly typed network.

    TensorRT 10 must be asked (`STRONGLY_TYPED`); TensorRT 11 networks are always strongly typed and
    its `STRONGLY_TYPED` is deprecated and ignored, so nothing is passed there.
    """
    if has_weak_typing(trt):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def make_logger(trt: ModuleType, verbose: bool = False) -> Any:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


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
