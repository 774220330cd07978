"""Embeddings folders: what one holds (`layout`), reading it back (`reader`), writing it part by part
(`writer`, over `parts` on disk), the folder as a whole (`folder`: where a run may write, the
manifest and swap that finish it, recovery of a killed swap), and the job that embeds a corpus of
images into one (`corpus`).

Folder problems raise `errors.EmbeddingsError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .layout import DEFAULT_DTYPE, DTYPES, FORMAT, IDS, MANIFEST, PARTS, VECTORS, aside_path, staging_path

__all__ = [
    "DEFAULT_DTYPE",
    "DTYPES",
    "FORMAT",
    "IDS",
    "MANIFEST",
    "PARTS",
    "VECTORS",
    "EmbedRun",
    "EmbeddingInterrupted",
    "EmbeddingSet",
    "EmbeddingWriter",
    "aside_path",
    "check_output",
    "embed_images",
    "embed_to_folder",
    "failed_count",
    "load_embeddings",
    "recover",
    "staging_path",
]

if TYPE_CHECKING:  # pragma: no cover
    from .corpus import EmbeddingInterrupted, EmbedRun, embed_images, embed_to_folder
    from .folder import check_output, recover
    from .reader import EmbeddingSet, failed_count, load_embeddings
    from .writer import EmbeddingWriter

__getattr__ = lazy_getattr(
    __name__,
    {
        "EmbeddingSet": ".reader",
        "load_embeddings": ".reader",
        "failed_count": ".reader",
        "EmbeddingWriter": ".writer",
        "check_output": ".folder",
        "recover": ".folder",
        "EmbedRun": ".corpus",
        "EmbeddingInterrupted": ".corpus",
        "embed_images": ".corpus",
        "embed_to_folder": ".corpus",
    },
)
