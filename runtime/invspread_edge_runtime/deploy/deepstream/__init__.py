"""An export made ready for DeepStream: nvinfer's secondary-GIE config and the graph it needs.

`write_deepstream(export, out, Settings(...))` (writer.py); the folded graph and its check (fold.py);
the config and INT8 calibration cache (config.py); nvinfer's documented keys (nvinfer_keys.py).
Torch-free; `onnx` is imported where the graph is edited.
"""

from .config import CONFIG_NAME, Settings
from .writer import MANIFEST, DeepStreamResult, check_target, read_manifest, write_deepstream

__all__ = [
    "CONFIG_NAME",
    "MANIFEST",
    "DeepStreamResult",
    "Settings",
    "check_target",
    "read_manifest",
    "write_deepstream",
]
