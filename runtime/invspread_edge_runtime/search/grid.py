"""A PNG of search results: one row per query, the query first, then its neighbours with scores.

Pillow only. A neighbour whose image file cannot be found or read is drawn as a grey tile with its
id, so a gallery moved after indexing still gives a readable picture; a tile with a `placeholder`
(a live camera's frame, kept nowhere) is grey with those words on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from ..files import atomic_path
from ..preprocess import load_image, to_rgb

QUERY_COLOUR = (33, 102, 172)
TILE_BACKGROUND = (245, 245, 245)
MISSING = (200, 200, 200)
TEXT = (20, 20, 20)


@dataclass
class Tile:
    image: Image.Image | str | os.PathLike[str] | None  # a decoded image, a file, or None (missing)
    caption: str
    subcaption: str = ""
    placeholder: str = ""  # words drawn on a grey tile when there is no picture to show


def draw_grid(
    rows: list[list[Tile]],
    out: str | os.PathLike[str],
    thumb: int = 112,
    *,
    framed: bool = True,
) -> Path:
    """Lay `rows` out (first tile of each row framed as the query, unless not `framed`: a contact
    sheet) and write a PNG atomically."""
    if not rows:
        raise DataError("nothing to draw: no query has results")
    font = _font(max(10, thumb // 9))
    caption_h = 2 * (font.size + 3) + 4 if hasattr(font, "size") else 30
    pad = max(4, thumb // 16)
    cols = max(len(r) for r in rows)
    cell_w, cell_h = thumb + 2 * pad, thumb + caption_h + 2 * pad
    canvas = Image.new("RGB", (cols * cell_w, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            x, y = c * cell_w + pad, r * cell_h + pad
            canvas.paste(_thumbnail(tile.image, thumb), (x, y))
            if tile.placeholder and tile.image is None:
                draw.multiline_text(
                    (x + thumb // 2, y + thumb // 2),
                    tile.placeholder,
                    fill=TEXT,
                    font=font,
                    anchor="mm",
                    align="center",
                )
            if c == 0 and framed:
                draw.rectangle([x - 3, y - 3, x + thumb + 2, y + thumb + 2], outline=QUERY_COLOUR, width=3)
            lines = [_fit(draw, tile.caption, font, thumb), _fit(draw, tile.subcaption, font, thumb)]
            for n, line in enumerate(lines):
                if line:
                    colour = QUERY_COLOUR if c == 0 and framed else TEXT
                    draw.text((x, y + thumb + 3 + n * (caption_h // 2)), line, fill=colour, font=font)
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return out


def _thumbnail(source: Image.Image | str | os.PathLike[str] | None, size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), TILE_BACKGROUND)
    try:
        img = source if isinstance(source, Image.Image) else load_image(source) if source else None
    except DataError:
        img = None
    if img is None:
        ImageDraw.Draw(tile).rectangle([0, 0, size - 1, size - 1], fill=MISSING)
        return tile
    img = fit(to_rgb(img), size)  # in-memory images decode like files: 16-bit, EXIF, alpha
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def fit(img: Image.Image, size: int) -> Image.Image:
    """`img` scaled so its longer side is `size` (aspect kept): the one thumbnail of grids, pages and
    maps. Small images (28-px Fashion-MNIST) are enlarged with nearest neighbours: crisp, not blurred."""
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.NEAREST if scale >= 2 else Image.BILINEAR)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 ships a scalable default font
    except TypeError:
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """Shorten from the left (file names differ at the end) until the text fits the tile."""
    if not text or draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text
