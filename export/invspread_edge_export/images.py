"""Model inputs drawn from an image set through the runtime's preprocessing (never re-implemented)."""

from __future__ import annotations

import numpy as np

from invspread_edge_runtime.evaluation.datasets import ImageSet
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.preprocess import normalize


def uint8_batch(images: ImageSet, size: int, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
    """(N, 3, size, size) uint8 after the evaluation resize; raises DataError on an unreadable file."""
    idx = range(len(images)) if indices is None else [int(i) for i in indices]
    return np.stack([images.uint8(i, size) for i in idx])


def model_inputs(
    images: ImageSet, meta: ModelMeta, indices: np.ndarray | list[int] | None = None
) -> np.ndarray:
    """(N, 3, S, S) float32: exactly what the runtime feeds the model for these images."""
    return normalize(uint8_batch(images, meta.image_size, indices), meta.mean, meta.std)


def spread_indices(total: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct indices out of `total`, drawn with a fixed seed, in ascending order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(count, total), replace=False))
