"""Image sets on disk, read without torch: the default Fashion-MNIST, CIFAR/STL binaries, folders.

One reader for everybody: training wraps it in torch tensors, export draws calibration and
held-out images from it, the benchmark measures accuracy on it. Labels are for evaluation only.
One selection rule too (`select`: classes, then the first N of a fixed shuffle), so the images a
run trained on and the images every evaluation measures on are chosen the same way.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..bounds import CLASS_ID
from ..errors import ConfigError, DataError, InvedgeError
from ..preprocess import list_images, load_image, to_uint8_chw

LIMIT_SEED = 0  # a limit takes the first N of this fixed shuffle, whatever the training seed is
FASHION_MNIST_DIR = Path(os.environ.get("INVEDGE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass
class ImageSet:
    """N images with optional labels: decoded in memory (`images`) or as files (`paths`)."""

    name: str
    classes: list[str]
    labels: np.ndarray | None = None  # (N,) int64, None when unlabelled
    images: np.ndarray | None = None  # (N, 3, H, W) uint8 at native size
    paths: list[Path] | None = None
    native_size: int | None = None  # side of in-memory images

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths or [])

    def ids(self) -> list[str]:
        if self.paths is not None:
            return [str(p) for p in self.paths]
        return [f"{self.name}:{i}" for i in range(len(self))]

    def pil(self, index: int) -> Image.Image:
        """One image as RGB PIL (decoding files here; raises DataError when unreadable)."""
        if self.images is not None:
            return Image.fromarray(np.ascontiguousarray(self.images[index].transpose(1, 2, 0)))
        assert self.paths is not None
        return load_image(self.paths[index])

    def uint8(self, index: int, size: int) -> np.ndarray:
        """(3, size, size) uint8 after the evaluation resize (shorter side, centre crop)."""
        if self.images is not None and self.native_size == size:
            return self.images[index]
        return to_uint8_chw(self.pil(index), size)

    def subset(self, indices: np.ndarray | list[int]) -> ImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=None if self.labels is None else self.labels[idx],
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx],
        )


def open_dataset(spec: str, split: str = "train") -> ImageSet:
    """`fashion-mnist`, `cifar10:PATH`, `cifar100:PATH`, `stl10:PATH`, or a folder of images.

    A folder has no split: both splits are the whole folder (evaluation protocols handle it).
    """
    if split not in ("train", "test"):
        raise DataError(f"Invalid split {split!r}. Only train and test are supported.")
    if spec in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return _fashion_mnist(split)
    kind, _, path = spec.partition(":")
    if path and kind in _BINARY_READERS:
        return _BINARY_READERS[kind](Path(path).expanduser(), split)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return image_folder(folder)
    raise DataError(
        f"unknown data {spec!r}",
        "Use fashion-mnist, cifar10:PATH, cifar100:PATH, stl10:PATH or a folder of images",
    )


def image_folder(folder: Path) -> ImageSet:
    """Every image under `folder`; first-level sub-folders name classes (labels for evaluation)."""
    paths = list_images(folder)
    parents = {p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) > 1}
    labelled = parents and all(len(p.relative_to(folder).parts) > 1 for p in paths)
    if not labelled:
        return ImageSet(name=folder.name, classes=[], paths=paths)
    classes = sorted(parents)
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup[p.relative_to(folder).parts[0]] for p in paths], dtype=np.int64)
    return ImageSet(name=folder.name, classes=classes, labels=labels, paths=paths)


# --- which images: classes, then the first N of a fixed shuffle ---------------------------------


def parse_classes(spec: str | None) -> list[int] | None:
    """'0-4' or '0,2,5-7' → sorted class ids; None stays None."""
    if spec is None or spec == "":
        return None
    out: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise InvedgeError(f"invalid --classes {spec!r}", "Use class ids and ranges, e.g. 0-4 or 0,2,5-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise InvedgeError(f"invalid --classes range {part.strip()!r}", "Write ranges low-high, e.g. 0-4")
        CLASS_ID.check(hi)  # a range is a list of ids: 0-99999999999 would fill the memory
        out.update(range(lo, hi + 1))
    return sorted(out)


def select(images: ImageSet, classes: list[int] | None = None, limit: int | None = None) -> ImageSet:
    """Keep the given classes (labels used only for this split), then the first `limit` of a fixed shuffle.

    The first N of one shuffle: a larger limit keeps every image of a smaller one.
    """
    idx = np.arange(len(images))
    if classes is not None:
        if images.labels is None:
            raise DataError(
                f"--classes needs labels, and {images.name} has none",
                "Use a folder with one sub-folder per class, or drop --classes",
            )
        known = set(np.unique(images.labels).tolist())
        missing = [c for c in classes if c not in known]
        if missing:
            raise DataError(
                f"classes {missing} are not in {images.name}",
                f"It has classes {min(known)}-{max(known)}" if known else "It has no labelled images",
            )
        idx = idx[np.isin(images.labels, classes)]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}", "Drop --limit to use every image")
        order = np.random.default_rng(LIMIT_SEED).permutation(len(idx))
        idx = np.sort(idx[order[:limit]])
    if len(idx) == len(images):
        return images
    return images.subset(idx)


# --- Fashion-MNIST (gzipped IDX, Debian package dataset-fashion-mnist) ----------------------------


def _fashion_mnist(split: str) -> ImageSet:
    prefix = "train" if split == "train" else "t10k"
    images_path = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
        raise DataError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}",
            f"Point INVEDGE_FASHION_MNIST (now {os.environ['INVEDGE_FASHION_MNIST']!r}) at the folder of its "
            "*-ubyte.gz files, or unset it"
            if os.environ.get("INVEDGE_FASHION_MNIST")
            else "Install the Debian package: apt-get install dataset-fashion-mnist",
        )
    images, labels = _read_fashion_mnist(images_path, labels_path, *_stamp(images_path), *_stamp(labels_path))
    return ImageSet(
        name="fashion-mnist",
        classes=list(FASHION_MNIST_CLASSES),
        labels=labels,
        images=images,
        native_size=images.shape[2],
    )


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _read_fashion_mnist(images_path: Path, labels_path: Path, *stamps: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded once per process (1-2 s of gunzip); read-only, so sharing the arrays is safe."""
    gray = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if gray.ndim != 3 or len(gray) != len(labels):
        raise DataError(f"Fashion-MNIST files in {images_path.parent} are inconsistent")
    images = np.repeat(gray[:, None], 3, axis=1)  # grayscale → RGB, like any other grayscale image
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (unsigned bytes) as an array."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
        if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        ndim = data[3]
        dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return body.reshape(dims)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"{path} is damaged or not an IDX file: {exc}",
            "Reinstall the data set (apt-get install --reinstall dataset-fashion-mnist) or use another --data",
        ) from exc


# --- binary releases of CIFAR-10/100 and STL-10 (no pickle) ---------------------------------------


def _cifar10(root: Path, split: str) -> ImageSet:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    folder = _find_folder(root, names[0], "cifar-10-batches-bin", "CIFAR-10 binary version")
    records = np.concatenate([_read_records(folder / n, 1 + 3072) for n in names])
    classes = _read_lines(folder / "batches.meta.txt") or [str(i) for i in range(10)]
    return ImageSet(
        name="cifar10",
        classes=classes,
        labels=records[:, 0].astype(np.int64),
        images=records[:, 1:].reshape(-1, 3, 32, 32),
        native_size=32,
    )


def _cifar100(root: Path, split: str) -> ImageSet:
    name = "train.bin" if split == "train" else "test.bin"
    folder = _find_folder(root, name, "cifar-100-binary", "CIFAR-100 binary version")
    records = _read_records(folder / name, 2 + 3072)  # coarse label, fine label, pixels
    classes = _read_lines(folder / "fine_label_names.txt") or [str(i) for i in range(100)]
    return ImageSet(
        name="cifar100",
        classes=classes,
        labels=records[:, 1].astype(np.int64),
        images=records[:, 2:].reshape(-1, 3, 32, 32),
        native_size=32,
    )


def _stl10(root: Path, split: str) -> ImageSet:
    stem = "train" if split == "train" else "test"
    folder = _find_folder(root, f"{stem}_X.bin", "stl10_binary", "STL-10 binary version")
    pixels = _read_records(folder / f"{stem}_X.bin", 3 * 96 * 96)
    labels = np.fromfile(folder / f"{stem}_y.bin", dtype=np.uint8).astype(np.int64) - 1  # 1-based
    if len(labels) != len(pixels):
        raise DataError(f"STL-10 files in {folder} are inconsistent")
    images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major
    classes = _read_lines(folder / "class_names.txt") or [str(i) for i in range(10)]
    return ImageSet(
        name="stl10",
        classes=classes,
        labels=labels,
        images=np.ascontiguousarray(images),
        native_size=96,
    )


_BINARY_READERS = {"cifar10": _cifar10, "cifar100": _cifar100, "stl10": _stl10}


def _find_folder(root: Path, marker: str, subfolder: str, what: str) -> Path:
    for folder in (root, root / subfolder):
        if (folder / marker).is_file():
            return folder
    raise DataError(
        f"{what} not found under {root} (looked for {marker})",
        "Give the folder that holds the extracted binary version of the data set",
    )


def _read_records(path: Path, record: int) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % record:
        raise DataError(f"{path} is damaged (size {data.size} is not a multiple of {record})")
    return data.reshape(-1, record)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
