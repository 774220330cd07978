"""Image decoding and the evaluation transform, in numpy/PIL.

This is the one implementation of the evaluation transform: the training side's evaluation data
and the export's calibration data call these same functions, so training, export and runtime see
identical pixels.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .metadata import ModelMeta

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, EOFError)
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_MAX_RESIZED_SQUARES = 16  # aspect ratios past 16:1 are cropped before resizing (resize_center_crop)
# Pillow warns (a Python warning, two lines of its own on stderr) between MAX_IMAGE_PIXELS and twice
# that (89–179 M pixels: a 108 MP phone photo), and raises DecompressionBombError past it, which
# load_image reports as an unreadable image. The warning tells a user nothing they can act on.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file as the 8-bit RGB image every part of the toolkit sees.

    The one decoding function: training (`datasets.ImageSet.pil`), export calibration and the
    runtime (`embed.Embedder`) all come here, so they see identical pixels. See `to_rgb` for what
    is done to each kind of image; an undecodable file raises DataError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()  # the first frame of a multi-frame GIF/TIFF/WebP: Image.open stands on it
            return to_rgb(img)
    except _DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else ""
        detail = f"{exc.__class__.__name__}: {reason}" if reason else exc.__class__.__name__
        raise DataError(f"unreadable image {path}: {detail}", "Check the file, or remove it") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """A decoded image (any mode) → upright 8-bit RGB, the same way for files and in-memory images.

    - EXIF orientation is applied (`ImageOps.exif_transpose`), as every viewer and camera app does.
    - 16-bit integer images (modes I;16*, and mode I, which Pillow uses for 16-bit PNGs on some
      versions) keep their high byte, v >> 8 (65535 → 255, 32768 → 128), never clipped to white:
      the same rule Pillow applies to 16-bit RGB(A) PNGs, so a 16-bit gray and a 16-bit colour
      file of one picture decode alike. Mode I with values above 65535 is taken as 32-bit
      (v >> 24); negative values are 0.
    - Float images (mode F) are taken as 0..1 (the convention of float TIFFs): round(v × 255),
      clipped to 0..255, NaN → 0. A fixed rule, so two images of one scene never scale differently.
    - Transparency (RGBA, LA, PA, a palette with a transparent colour) is composited on white.
    - CMYK, YCbCr, palette, 1-bit and grayscale images are converted by Pillow; grayscale → R=G=B.
    """
    img = _upright(img)
    mode = img.mode
    if mode == "RGB":
        return img  # `_upright` returned a new image: the caller's stays untouched
    if mode in _16_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(img), "L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...; ValueError for a mode Pillow cannot map


def _upright(img: Image.Image) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(img)
    except (ValueError, TypeError, KeyError, SyntaxError, struct.error, OSError):
        return img.copy()  # EXIF too damaged to read an orientation: no viewer could apply one either
    return img.copy() if upright is None or upright is img else upright


def _to_uint8(img: Image.Image) -> np.ndarray:
    """One-channel 16-bit, 32-bit integer or float pixels → uint8 (rules in `to_rgb`)."""
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    values = np.asarray(img).astype(np.int64)
    values = np.clip(values, 0, None)
    shift = 8 if img.mode != "I" or values.size == 0 or values.max() <= 65535 else 24
    return np.minimum(values >> shift, 255).astype(np.uint8)


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
        left = round((new_w - size) / 2.0)
        top = round((new_h - size) / 2.0)
        if new_w * new_h > _MAX_RESIZED_SQUARES * size * size:
            # A very long, thin image (a 1 × 200 000 PNG is a few hundred bytes) would be resized
            # to gigapixels first: resize only the source region the centre crop keeps instead.
            sx, sy = new_w / width, new_h / height
            box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
            return img.resize((size, size), Image.BILINEAR, box=box)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        img = img.crop((left, top, left + size, top + size))
    return img


def to_uint8_chw(img: Image.Image, size: int) -> np.ndarray:
    """(3, size, size) uint8: the stored form of a decoded, resized image."""
    arr = np.asarray(resize_center_crop(img, size), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def frame_to_uint8_chw(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded video frame, (H, W, 3) uint8 RGB, in the stored form: resized and cropped exactly as
    an image file is, so a frame and the picture it shows embed alike."""
    return to_uint8_chw(Image.fromarray(rgb), size)


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


def load_uint8(paths: list[Path], size: int) -> np.ndarray:
    """Image files → (N, 3, size, size) uint8, decoded and resized as `Embedder` does (DataError for
    an unreadable one): for the fixed sets whose every file must embed (the probe set)."""
    return np.stack([to_uint8_chw(load_image(path), size) for path in paths])


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every supported image under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "not found" if not folder.exists() else "not a folder"
        raise DataError(f"{what}: {folder}", "Pass a folder of images (sub-folders are searched too)")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images found in {folder}", f"Supported types: {', '.join(IMAGE_SUFFIXES)}")
    return paths
