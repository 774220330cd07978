"""Native TensorRT: build engines from exported ONNX files on the device, cache and load them.

    from invspread_edge_runtime.tensorrt import build_engine
    info = build_engine("model.int8.onnx", "model.int8.engine", precision="int8", max_batch=64)

Nothing here imports `tensorrt` or cuda-python until a function needs them.
"""

from .build import build_engine
from .cache import BatchProfile, EngineInfo, EngineKey, default_cache_dir, read_sidecar, sidecar_path
from .load import LoadedEngine, get_or_build_engine, load_engine

__all__ = [
    "BatchProfile",
    "EngineInfo",
    "EngineKey",
    "LoadedEngine",
    "build_engine",
    "default_cache_dir",
    "get_or_build_engine",
    "load_engine",
    "read_sidecar",
    "sidecar_path",
]
