"""Training and evaluation data as uint8 tensors: which images, in which order, decoded where.

- In-memory sets (Fashion-MNIST, CIFAR, STL) are one uint8 array at the training size; a batch
  is an index into it, augmented afterwards on the model's device (see augment.py).
- Folders are decoded in DataLoader worker processes to uint8 at the training size with the
  runtime's own resize (`ImageSet.uint8` → runtime.preprocess.to_uint8_chw); an unreadable file
  is dropped from its batch and counted, never a crash mid-epoch.
- The order is a pure function of (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from invspread_edge_runtime.errors import DataError
from invspread_edge_runtime.evaluation.datasets import LIMIT_SEED, ImageSet, open_dataset, select

from .sizes import MIN_IMAGE_SIZE

MEAN_STD_SAMPLE = 2000  # folders: images decoded to estimate the normalisation
SIZE_SAMPLE = 1000  # folders: image headers read to find their common size
FOLDER_MAX_NATIVE = 64  # a folder of images this small or smaller trains at their own size


def load_split(spec: str, split: str, classes: list[int] | None, limit: int | None) -> ImageSet:
    return select(open_dataset(spec, split), classes, limit)


def default_image_size(images: ImageSet) -> tuple[int, str]:
    """(size, why): native size for in-memory sets (28 for Fashion-MNIST, 32 for CIFAR); for a
    folder, its images' own size when they share one no larger than 64 px (upsampling them costs
    up to 5× the compute for no detail), else 64.

    A folder is judged by the headers of at most SIZE_SAMPLE images spread over it (a header read
    is cheap; decoding is not). The shorter side is what the evaluation resize keeps."""
    if images.native_size:
        return images.native_size, f"the set's native {images.native_size} px"
    paths = images.paths or []
    step = max(1, len(paths) // SIZE_SAMPLE)
    sizes = {_header_size(p) for p in paths[::step][:SIZE_SAMPLE]}
    sizes.discard(None)
    if len(sizes) == 1:
        ((width, height),) = sizes
        if max(width, height) <= FOLDER_MAX_NATIVE:
            side = max(MIN_IMAGE_SIZE, min(width, height))
            return side, f"the folder's images are all {width}×{height} px"
        return (
            FOLDER_MAX_NATIVE,
            f"the folder's images are {width}×{height} px, resized to {FOLDER_MAX_NATIVE}",
        )
    if len(sizes) > 1:
        return FOLDER_MAX_NATIVE, f"the folder's images differ in size, all resized to {FOLDER_MAX_NATIVE}"
    return FOLDER_MAX_NATIVE, f"resized to {FOLDER_MAX_NATIVE}"


def _header_size(path: os.PathLike[str]) -> tuple[int, int] | None:
    """An image's (width, height) from its header, None when unreadable (training counts those)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # PIL raises many types for damaged or foreign files
        return None


def fingerprint(images: ImageSet) -> str:
    """sha256 naming exactly which images (and labels) a run trained on."""
    # names as the file system's bytes: a file name that is not UTF-8 is still a name
    h = hashlib.sha256(f"{images.name}:{len(images)}".encode("utf-8", "surrogateescape"))
    if images.images is not None:
        h.update(np.ascontiguousarray(images.images).data)
    else:
        for p in images.paths or []:
            try:
                st = p.stat()
                h.update(os.fsencode(p) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(os.fsencode(p) + b"\0missing\n")
    if images.labels is not None:
        h.update(np.ascontiguousarray(images.labels).data)
    return h.hexdigest()


# --- uint8 at the training size ------------------------------------------------------------------


class UInt8Dataset(torch.utils.data.Dataset):
    """Index → (index, uint8 (3, S, S) array, or None when the file cannot be decoded)."""

    def __init__(self, images: ImageSet, size: int) -> None:
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None]:
        try:
            return index, self.images.uint8(index, self.size)
        except DataError:
            return index, None


def collate_uint8(items: list[tuple[int, np.ndarray | None]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Drop undecodable images: (indices (M,), uint8 (M, 3, S, S), failed indices)."""
    ok = [(i, a) for i, a in items if a is not None]
    failed = [i for i, a in items if a is None]
    if not ok:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.uint8), failed
    return (
        torch.tensor([i for i, _ in ok], dtype=torch.int64),
        torch.from_numpy(np.stack([a for _, a in ok])),
        failed,
    )


def in_memory_uint8(images: ImageSet, size: int) -> np.ndarray | None:
    """The whole set as one (N, 3, S, S) uint8 array, resized once if stored at another size."""
    if images.images is None:
        return None
    if images.native_size == size:
        return images.images
    return np.stack([images.uint8(i, size) for i in range(len(images))])


@dataclass
class Batch:
    indices: torch.Tensor  # (M,) positions in the image set
    images: torch.Tensor  # (M, 3, S, S) uint8
    failed: list[int] = field(default_factory=list)


class UInt8Source:
    """Batches of uint8 images at one size, from memory or decoded by worker processes."""

    def __init__(self, images: ImageSet, size: int, workers: int = 0, pin_memory: bool = False) -> None:
        self.images, self.size, self.workers, self.pin_memory = images, size, workers, pin_memory
        self.array = in_memory_uint8(images, size)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_indices: Sequence[Sequence[int]]) -> Iterator[Batch]:
        if self.array is not None:
            for idx in batch_indices:
                idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
                imgs = torch.from_numpy(self.array[np.asarray(idx, dtype=np.int64)])
                yield Batch(idx_t, imgs.pin_memory() if self.pin_memory else imgs)
            return
        if not batch_indices:
            return
        loader = torch.utils.data.DataLoader(
            UInt8Dataset(self.images, self.size),
            batch_sampler=[list(map(int, b)) for b in batch_indices],
            num_workers=self.workers,
            collate_fn=collate_uint8,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        for idx, imgs, failed in loader:
            yield Batch(idx, imgs, failed)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of epoch `epoch`: the same on every rank and after a resume."""
    return np.random.default_rng([seed, epoch, 0x1D]).permutation(n)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """This rank's batches of one epoch: step k takes the rank-th B-slice of the k-th B·world block."""
    order = epoch_order(n, seed, epoch)
    per_step = batch_size * world_size
    steps = n // per_step  # drop_last, as the authors: BatchNorm and the loss want full batches
    return [
        order[k * per_step + rank * batch_size : k * per_step + (rank + 1) * batch_size] for k in range(steps)
    ]


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """Seed of the augmentation generator at one step: resuming needs no generator state."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def mean_std(
    source: UInt8Source, sample: int = MEAN_STD_SAMPLE
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1]: over everything in memory, over a fixed sample of a folder."""
    if source.array is not None:
        arr = source.array
        mean = tuple(float(arr[:, c].mean(dtype=np.float64)) / 255 for c in range(3))
        std = tuple(float(arr[:, c].std(dtype=np.float64)) / 255 for c in range(3))
    else:
        n = len(source)
        pick = np.sort(np.random.default_rng(LIMIT_SEED).permutation(n)[: min(sample, n)])
        chunks = [np.arange(i, min(i + 64, len(pick))) for i in range(0, len(pick), 64)]
        sums = np.zeros(3)
        sq = np.zeros(3)
        count = 0
        first_failed = None
        for batch in source.batches([pick[c] for c in chunks]):
            if first_failed is None and batch.failed:
                first_failed = batch.failed[0]
            if len(batch.indices) == 0:  # every file of this chunk unreadable
                continue
            x = batch.images.numpy().astype(np.float64)
            sums += x.sum(axis=(0, 2, 3))
            sq += (x**2).sum(axis=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
        if count == 0:
            raise DataError(
                f"none of the {len(pick)} images sampled from {source.images.name} could be decoded"
                f"{first_failure(source, first_failed)}",
                "Check that the folder holds readable images (PNG, JPEG, ...)",
            )
        m = sums / count
        mean = tuple(float(v) / 255 for v in m)
        std = tuple(float(np.sqrt(max(s / count - mm**2, 0.0))) / 255 for s, mm in zip(sq, m, strict=True))
    std = tuple(max(s, 1e-3) for s in std)  # a constant channel must not divide by zero
    return tuple(round(v, 6) for v in mean), tuple(round(v, 6) for v in std)


def first_failure(source: UInt8Source, index: int | None) -> str:
    """', e.g. PATH: why' for the first unreadable image (decoded again here to learn the reason)."""
    if index is None:
        return ""
    name = source.images.ids()[index]
    try:
        source.images.uint8(index, source.size)
    except DataError as exc:
        return f", e.g. {exc.message}" if name in exc.message else f", e.g. {name}: {exc.message}"
    except Exception as exc:
        return f", e.g. {name}: {exc}"
    return f", e.g. {name}"
