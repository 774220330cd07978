"""invspread-edge runtime: embed images and search nearest neighbours without torch.

Imports numpy, Pillow and (when present) onnxruntime, tensorrt, cuda-python and faiss only.
Heavy modules load lazily, so `import invspread_edge_runtime` is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .lazy import lazy_getattr

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()  # the project's one version

__all__ = ["Embedder", "EmbeddingSet", "Index", "ModelMeta", "__version__", "load_embeddings", "open_backend"]

if TYPE_CHECKING:  # pragma: no cover
    from .backends.select import open_backend
    from .embedder import Embedder
    from .embeddings import EmbeddingSet, load_embeddings
    from .index import Index
    from .metadata import ModelMeta

__getattr__ = lazy_getattr(
    __name__,
    {
        "Embedder": ".embedder",
        "EmbeddingSet": ".embeddings",
        "load_embeddings": ".embeddings",
        "Index": ".index",
        "ModelMeta": ".metadata",
        "open_backend": ".backends.select",
    },
)
