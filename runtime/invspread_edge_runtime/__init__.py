"""invspread-edge runtime: embed images and search nearest neighbours without torch.

Imports numpy, Pillow and (when present) onnxruntime, tensorrt, cuda-python and faiss only.

The package's root holds what every part uses (errors, files, hooks, locks, console, bounds, the model's
metadata and integrity, preprocessing, the `Embedder`, the CLI and its plugins); each job has its
folder: `backends/` and `tensorrt/` (running a model), `embeddings/` (embeddings folders),
`index/` and `milvus_store/` (galleries), `search/` (image queries), `verify/` (probe checks),
`evaluation/` (data sets and the kNN/retrieval protocol), `bench/` (`invedge bench`), `serve/`
(`invedge serve`), `commands/` (the verbs).

The public names below load on first use: `import invspread_edge_runtime.errors` (every CLI start,
the training package) must not pay for numpy, Pillow and the backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_getattr
from .version import __version__

__all__ = ["Embedder", "EmbeddingSet", "Index", "ModelMeta", "__version__", "load_embeddings", "open_backend"]

if TYPE_CHECKING:  # pragma: no cover
    from .embedder import Embedder, open_backend
    from .embeddings.reader import EmbeddingSet, load_embeddings
    from .index.gallery import Index
    from .metadata import ModelMeta

__getattr__ = lazy_getattr(
    __name__,
    {
        "Embedder": ".embedder",
        "EmbeddingSet": ".embeddings.reader",
        "load_embeddings": ".embeddings.reader",
        "Index": ".index.gallery",
        "ModelMeta": ".metadata",
        "open_backend": ".embedder",
    },
)
