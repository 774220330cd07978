"""Which images calibrate an INT8 build: a versioned manifest, or a folder of the user's images.

A manifest names each image by its index in a data set and the sha256 of its pixels, so two builds
calibrate on identical pixels (and a changed data set is caught, not silently used). The default
set for Fashion-MNIST ships in the repository's top-level `calibration/` folder (this package's
data); `make_manifest` draws one from any labelled set.

Pixel hash: sha256 of the image's RGB pixels at native size, as height × width × 3 uint8 bytes,
decoded by the toolkit's one decoder (`preprocess.load_image`: EXIF orientation applied, 16-bit
scaled, transparency on white), so the hash is of what the model sees, whatever the file format.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.evaluation.datasets import ImageSet, open_dataset
from invspread_edge_runtime.files import atomic_write_json, read_json
from invspread_edge_runtime.preprocess import list_images, load_image

MANIFEST_FORMAT = "invspread-edge/calibration/1"
# The manifests are this package's data: the repository's top-level calibration/, installed as the
# subpackage `invspread_edge_export.calibration` (an editable install maps it to that folder).
CALIBRATION_DIR = Path(
    os.environ.get("INVEDGE_CALIBRATION_DIR") or str(resources.files("invspread_edge_export.calibration"))
)
DEFAULT_MANIFESTS = {"fashion-mnist": "fashion-mnist-train-v1.json"}
DEFAULT_COUNT = 512
MIN_IMAGES = 32
SEED = 0
# How a set's activation ranges are computed (`calibrate.METHODS` maps each to ONNX Runtime's
# calibrator). Named here, in a module without ONNX Runtime, so `invedge export --help` lists them.
METHOD_NAMES = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"


@dataclass(frozen=True)
class CalibrationSet:
    """The calibration images, in order, with their identities and pixel hashes."""

    name: str  # "fashion-mnist-train-v1", "folder:/path", ...
    images: ImageSet
    ids: tuple[str, ...]  # data-set index ("fashion-mnist:train:123") or file path
    sha256: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def set_id(self) -> str:
        """sha256 over the ordered (id, pixel hash) list: equal sets, equal id."""
        return hashlib.sha256(json.dumps(list(zip(self.ids, self.sha256, strict=True))).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What to keep beside an INT8 build so it can be reproduced (written as calibration.json)."""
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "set_id": self.set_id,
            "count": len(self),
            "images": [{"id": i, "sha256": h} for i, h in zip(self.ids, self.sha256, strict=True)],
        }


def pixel_sha256(images: ImageSet, index: int) -> str:
    """The pixel hash defined in the module docstring."""
    if images.images is not None:
        pixels = np.ascontiguousarray(images.images[index].transpose(1, 2, 0))
    else:
        pixels = np.asarray(images.pil(index), dtype=np.uint8)  # ImageSet.pil: load_image, RGB
    return hashlib.sha256(pixels.tobytes()).hexdigest()


# --- manifests ------------------------------------------------------------------------------------


def make_manifest(
    data: str, per_class: int, split: str = "train", seed: int = SEED, name: str | None = None
) -> dict[str, Any]:
    """Draw `per_class` images of every class (fixed seed), interleaved class by class so that
    every prefix of the list is stratified too (`--calib-count N` takes the first N)."""
    images = open_dataset(data, split)
    if images.labels is None:
        raise DataError(f"{data} has no labels; a stratified manifest needs class sub-folders")
    rng = np.random.default_rng(seed)
    classes = np.unique(images.labels)
    picks = []
    for c in classes:
        members = np.flatnonzero(images.labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} of {data} has {len(members)} images, fewer than {per_class}")
        picks.append(rng.choice(members, size=per_class, replace=False))
    order = np.stack(picks, axis=1).reshape(-1)  # round robin: c0, c1, ..., c9, c0, ...
    return {
        "format": MANIFEST_FORMAT,
        "name": name or f"{images.name}-{split}-v1",
        "version": 1,
        "data": data,
        "split": split,
        "seed": seed,
        "selection": f"stratified, {per_class} per class, interleaved by class (every prefix is stratified)",
        "pixel_hash": "sha256 of RGB pixels, height x width x 3 uint8, native size",
        "count": len(order),
        "images": [
            {"index": int(i), "label": int(images.labels[i]), "sha256": pixel_sha256(images, int(i))}
            for i in order
        ],
    }


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    atomic_write_json(path, manifest)
    return Path(path)


def default_manifest_path(data: str) -> Path | None:
    """The shipped manifest for a data set name, or None when there is none."""
    key = "fashion-mnist" if data in ("fashion-mnist", "fashion_mnist", "fmnist") else data
    name = DEFAULT_MANIFESTS.get(key)
    return CALIBRATION_DIR / name if name else None


def load_manifest(path: str | os.PathLike[str], count: int | None = DEFAULT_COUNT) -> CalibrationSet:
    """The first `count` images of a manifest file (None: all), each verified against its pixel hash."""
    manifest = read_json(path, "calibration manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not an invspread-edge calibration manifest (format {MANIFEST_FORMAT})")
    return manifest_set(manifest, count, source=f"calibration manifest {path}")


def manifest_set(
    manifest: dict[str, Any], count: int | None, source: str = "calibration manifest"
) -> CalibrationSet:
    """The first `count` images a manifest names, from its data set, verified against their hashes."""
    try:
        entries = manifest["images"]
        indices = [int(e["index"]) for e in entries]
        hashes = [str(e["sha256"]) for e in entries]
        data, split = str(manifest["data"]), str(manifest["split"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{source} is damaged ({exc.__class__.__name__}: {exc})") from exc
    count = _check_count(len(indices), count, source)
    indices, hashes = indices[:count], hashes[:count]
    images = open_dataset(data, split)
    if max(indices) >= len(images):
        raise DataError(f"{source} names image {max(indices)}, but {data} has {len(images)}")
    images = images.subset(indices)
    for n, (index, expected) in enumerate(zip(indices, hashes, strict=True)):
        if pixel_sha256(images, n) != expected:
            raise DataError(
                f"calibration image {data}:{split}:{index} does not match the sha256 in the {source}",
                f"The installed {data} differs from the one the manifest was made from; "
                "pass --calib FOLDER to calibrate on your own images",
            )
    return CalibrationSet(
        name=str(manifest.get("name", data)),
        images=images,
        ids=tuple(f"{data}:{split}:{i}" for i in indices),
        sha256=tuple(hashes),
    )


def default_set(data: str, count: int = DEFAULT_COUNT, seed: int = SEED) -> CalibrationSet:
    """The shipped manifest for `data` when there is one; else drawn from its train split the way
    `make_manifest` draws (or evenly, with the same seed, when the data has no labels)."""
    shipped = default_manifest_path(data)
    if shipped is not None:
        if not shipped.is_file():
            raise DataError(f"the default calibration manifest {shipped} is missing", "Pass --calib FOLDER")
        return load_manifest(shipped, count)
    images = open_dataset(data, "train")
    if images.labels is not None:
        n_classes = len(np.unique(images.labels))
        smallest = int(np.bincount(images.labels).min())
        per_class = min(-(-count // n_classes), smallest)
        if per_class * n_classes >= MIN_IMAGES:
            manifest = make_manifest(data, per_class, seed=seed, name=f"{images.name}-train-drawn")
            return manifest_set(manifest, count, source=f"calibration drawn from {data}")
    count = _check_count(len(images), count, f"data {data}")
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=count, replace=False))
    chosen = images.subset(idx)
    return CalibrationSet(
        name=f"{images.name}-train-drawn",
        images=chosen,
        ids=tuple(f"{data}:train:{i}" for i in idx),
        sha256=tuple(pixel_sha256(chosen, n) for n in range(len(chosen))),
    )


# --- a folder of the user's images ----------------------------------------------------------------


def from_folder(
    folder: str | os.PathLike[str], count: int | None = DEFAULT_COUNT, seed: int = SEED
) -> CalibrationSet:
    """Up to `count` images from `folder` (recursively; evenly drawn with a fixed seed when there
    are more). Every chosen image must decode: a broken file is named, not skipped."""
    folder = Path(folder)
    try:
        paths = list_images(folder)
    except DataError as exc:
        raise DataError(f"calibration folder: {exc.message}", exc.hint) from exc
    count = _check_count(len(paths), count, f"calibration folder {folder}")
    if count < len(paths):
        paths = [
            paths[i]
            for i in np.sort(np.random.default_rng(seed).choice(len(paths), size=count, replace=False))
        ]
    hashes = []
    for path in paths:
        try:
            pixels = np.asarray(load_image(path), dtype=np.uint8)
        except DataError as exc:
            raise DataError(
                f"calibration folder {folder} holds an unreadable image: {path.name}",
                "Remove or replace it, then run again",
            ) from exc
        hashes.append(hashlib.sha256(pixels.tobytes()).hexdigest())
    return CalibrationSet(
        name=f"folder:{folder}",
        images=ImageSet(name=folder.name, classes=[], paths=paths),
        ids=tuple(str(p.relative_to(folder)) for p in paths),
        sha256=tuple(hashes),
    )


def _check_count(available: int, count: int | None, what: str) -> int:
    if count is not None and count < MIN_IMAGES:
        raise InvedgeError(f"Invalid --calib-count {count}. At least {MIN_IMAGES} images are needed.")
    if available < MIN_IMAGES:
        raise DataError(
            f"{what} has {available} images; INT8 calibration needs at least {MIN_IMAGES}",
            "Add representative images (a few hundred is typical)",
        )
    return available if count is None else min(count, available)


def main(argv: list[str] | None = None) -> None:
    """Write a manifest: python -m invspread_edge_export.calibration_set fashion-mnist --per-class 100 OUT."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data", help="fashion-mnist, cifar10:PATH, ... or a folder with class sub-folders")
    parser.add_argument("out", type=Path, help="the manifest to write (JSON)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    manifest = make_manifest(args.data, args.per_class, args.split, args.seed, args.name)
    write_manifest(manifest, args.out)
    print(f"wrote {args.out}: {manifest['count']} images")


if __name__ == "__main__":
    main()
