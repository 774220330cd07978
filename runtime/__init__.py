"""invspread-edge runtime: embed images and search nearest neighbours without torch.

Imports numpy, Pillow and (when present) onnxruntime, tensorrt, cuda-python and faiss only.
Heavy modules load lazily, so `import invspread_edge_runtime` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Embedder", "Index", "ModelMeta", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .embed import Embedder
    from .index import Index
    from .metadata import ModelMeta

_LAZY = {"Embedder": ".embed", "Index": ".index", "ModelMeta": ".metadata"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
