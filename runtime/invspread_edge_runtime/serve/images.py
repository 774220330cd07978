"""Uploaded bytes → the model's (3, S, S) uint8 input, with the toolkit's one decoder.

The size is read from the header before any pixel is decoded, so an image of too many pixels is
refused (413) without the memory to decode it. Unknown formats are 415, damaged files 400.
Decoding is `preprocess.load_image` (the same pixels as `invedge embed` sees for the same file).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..preprocess import IMAGE_SUFFIXES, load_image, to_uint8_chw
from .errors import ServeError

_HEADER_ERRORS = (OSError, ValueError, EOFError, SyntaxError)
_FORMATS = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)


def decode(data: bytes, name: str, image_size: int, max_pixels: int) -> np.ndarray:
    """(3, image_size, image_size) uint8 for one uploaded file, or the ServeError that says why not."""
    check_pixels(data, name, max_pixels)
    return decode_checked(data, name, image_size)


def decode_checked(data: bytes, name: str, image_size: int) -> np.ndarray:
    """`decode` of a file whose pixels `check_pixels` counted already."""
    try:
        image = load_image(io.BytesIO(data))
    except DataError as exc:
        reason = exc.message.split(": ", 1)[-1]
        if isinstance(exc.__cause__, UnidentifiedImageError):
            raise not_an_image(name) from exc
        raise ServeError(
            400, f"{name} is a damaged image ({reason})", "Check the file, or send another"
        ) from exc
    return to_uint8_chw(image, image_size)


def check_pixels(data: bytes, name: str, max_pixels: int) -> int:
    """The image's pixels; 413 when more than `max_pixels` (read from its header: nothing decoded yet)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise too_many_pixels(name, None, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise not_an_image(name) from exc
    except _HEADER_ERRORS as exc:
        raise ServeError(400, f"{name} is a damaged image ({type(exc).__name__})", "Check the file") from exc
    if width * height > max_pixels:
        raise too_many_pixels(name, (width, height), max_pixels)
    return width * height


def not_an_image(name: str) -> ServeError:
    return ServeError(415, f"{name} is not an image of a known format", f"Send one of: {_FORMATS}")


def too_many_pixels(name: str, size: tuple[int, int] | None, max_pixels: int) -> ServeError:
    shown = f"{size[0]} × {size[1]} pixels" if size else "too many pixels"
    return ServeError(
        413,
        f"{name} is {shown}, over the limit of {max_pixels:,}",
        "Send a smaller image (the model sees it resized anyway), or start the service with a larger --max-pixels",
    )
