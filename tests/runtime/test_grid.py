"""The results picture: layout, the query frame, missing images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from invspread_edge_runtime.errors import DataError
from invspread_edge_runtime.search.grid import QUERY_COLOUR, Tile, draw_grid


def test_grid_lays_out_queries_and_neighbours(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))
    rows = [
        [Tile(files[0], "query", files[0].name)]
        + [Tile(f, f"{0.9 - i / 10:.3f}", f.name) for i, f in enumerate(files[1:4])],
        [
            Tile(Image.open(files[5]), "query", "in memory"),
            Tile(tmp_path / "moved.png", "0.500", "moved.png"),
        ],
    ]
    out = draw_grid(rows, tmp_path / "results.png", thumb=64)
    assert [p.name for p in tmp_path.iterdir()] == ["results.png"]  # written atomically, nothing else
    img = np.asarray(Image.open(out).convert("RGB"))
    cell_w = 64 + 2 * 4
    assert img.shape[1] == 4 * cell_w and img.shape[0] % 2 == 0  # 4 columns (the longest row), 2 rows
    cell_h = img.shape[0] // 2
    # the query tile of each row is framed in the query colour
    assert (img[1, 1:68] == QUERY_COLOUR).all() and (img[cell_h + 1, 1:68] == QUERY_COLOUR).all()
    assert (img[1, cell_w + 1 : cell_w + 68] == 255).all()  # neighbours are not framed
    # the neighbour whose file is gone is a grey placeholder, not an error
    missing = img[cell_h + 4 : cell_h + 60, cell_w + 4 : cell_w + 60]
    assert (missing == 200).all()
    # real neighbours are drawn from their files (Fashion-MNIST: dark background, bright garment)
    tile = img[4:68, cell_w + 4 : cell_w + 68]
    assert tile.min() < 30 and tile.max() > 150
    # the missing row's third and fourth cells stay blank
    assert (img[cell_h:, 2 * cell_w :] == 255).all()


def test_nothing_to_draw_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nothing to draw"):
        draw_grid([], tmp_path / "x.png")


def test_bad_tiles_are_grey_and_odd_names_are_drawn(tmp_path):
    """A decompression bomb, a text file named .png, an empty file and a non-UTF-8 name: a picture."""
    import os
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    odd = os.fsdecode(b"\xff\xfe.png")
    rows = [
        [Tile(bomb, "query", odd), Tile(tmp_path / "text.png", "0.9", odd), Tile(tmp_path / "empty.jpg", "")]
    ]
    out = draw_grid(rows, tmp_path / "grid.png", thumb=40)
    img = np.asarray(Image.open(out).convert("RGB"))
    cell = img.shape[1] // 3
    assert img.shape[1] == 3 * cell
    for c in range(3):  # every tile drawn as the grey "missing" square
        x = c * cell + cell // 2
        assert tuple(img[img.shape[0] // 3, x]) == (200, 200, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png", "empty.jpg", "grid.png", "text.png"]
