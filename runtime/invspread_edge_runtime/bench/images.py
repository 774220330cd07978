"""The images every runtime of one benchmark sees: the same N images, decoded once, same order."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..bounds import BENCH_IMAGES
from ..errors import DataError
from ..evaluation.datasets import open_dataset
from ..metadata import ModelMeta
from ..preprocess import preprocess_images


@dataclass
class BenchImages:
    """Decoded images (PIL, RGB) and their labels; file decoding is done once, outside every timing."""

    name: str
    images: list[Image.Image]
    labels: np.ndarray | None
    skipped: int = 0  # unreadable files left out

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch: int, limit: int = 16) -> list[list[Image.Image]]:
        """Up to `limit` distinct batches of `batch` images, wrapping around the set."""
        count = max(1, min(limit, math.ceil(len(self.images) / batch)))
        n = len(self.images)
        return [[self.images[(k * batch + j) % n] for j in range(batch)] for k in range(count)]

    def preprocessed(self, meta: ModelMeta, chunk: int = 256):
        """The model inputs of all images, chunk by chunk (the accuracy pass)."""
        for start in range(0, len(self.images), chunk):
            yield preprocess_images(self.images[start : start + chunk], meta)


DEFAULT_DATA = "fashion-mnist"
DEFAULT_COUNT = 1000  # images timed and measured


def check_count(count: int) -> None:
    """At least two images (accuracy compares each with its neighbours), and as many as fit in memory."""
    BENCH_IMAGES.check(count)


def load_bench_images(data: str, count: int, seed: int = 0, max_side: int = 1024) -> BenchImages:
    """`count` images drawn with a fixed seed from `data` (Fashion-MNIST: the test split).

    Photos are kept decoded in memory; one whose shorter side exceeds `max_side` is first reduced
    by an integer factor (so 1 000 camera photos fit in memory); the timed preprocessing still
    resizes and crops every image.
    """
    check_count(count)
    dataset = open_dataset(data, "test")
    total = len(dataset)
    if total == 0:
        raise DataError(f"no images in {data}", "Pass --data fashion-mnist or a folder of images")
    rng = np.random.default_rng(seed)
    order = np.sort(rng.choice(total, size=min(count, total), replace=False))
    images: list[Image.Image] = []
    kept: list[int] = []
    skipped = 0
    for i in order:
        try:
            images.append(_bounded(dataset.pil(int(i)), max_side))
            kept.append(int(i))
        except DataError:
            skipped += 1
    if len(images) < 2:
        raise DataError(
            f"fewer than 2 readable images in {data} ({skipped} unreadable)",
            "Pass --data fashion-mnist or a folder of at least 2 readable images",
        )
    labels = None if dataset.labels is None else np.asarray(dataset.labels)[kept]
    return BenchImages(name=dataset.name, images=images, labels=labels, skipped=skipped)


def _bounded(img: Image.Image, max_side: int) -> Image.Image:
    factor = min(img.size) // max_side
    return img.reduce(factor) if factor >= 2 else img
