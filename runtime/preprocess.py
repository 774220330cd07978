"""Image decoding and the evaluation transform, in numpy/PIL.

This is the one implementation of the evaluation transform: the training side's evaluation data
and the export's calibration data call these same functions, so training, export and runtime see
identical pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .metadata import ModelMeta

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode any supported image as RGB; grayscale, RGBA and palette images are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "RGB":
                return img.copy()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"unreadable image {path}: {exc.__class__.__name__}") from exc


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bilinear, antialiased), then crop the centre square.

    The same arithmetic as torchvision's Resize(int) + CenterCrop.
    """
    width, height = img.size
    if (width, height) != (size, size):
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        left = round((new_w - size) / 2.0)
        top = round((new_h - size) / 2.0)
        img = img.crop((left, top, left + size, top + size))
    return img


def to_uint8_chw(img: Image.Image, size: int) -> np.ndarray:
    """(3, size, size) uint8: the stored form of a decoded, resized image."""
    arr = np.asarray(resize_center_crop(img, size), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def normalize(batch_uint8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(N, 3, H, W) uint8 → float32 (x / 255 − mean) / std."""
    scale = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    shift = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    return (batch_uint8.astype(np.float32) - shift) / scale


def preprocess_images(images: list[Image.Image], meta: ModelMeta) -> np.ndarray:
    """PIL images → the model's input (N, 3, S, S) float32."""
    if not images:
        return np.zeros((0, 3, meta.image_size, meta.image_size), dtype=np.float32)
    stacked = np.stack([to_uint8_chw(img, meta.image_size) for img in images])
    return normalize(stacked, meta.mean, meta.std)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every supported image under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images found in {folder}", f"Supported types: {', '.join(IMAGE_SUFFIXES)}")
    return paths
