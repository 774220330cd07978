"""Ranked lists of items (`invedge select`, `invedge outliers`) as files and as a picture.

--out by suffix: .txt one id per line (what a labelling tool or `xargs` takes), .csv a row per item
(rank, id, location and the verb's score), .json the verb's `--json`. --grid: a contact sheet in
rank order, each tile captioned with its file name and score (the first GRID_MAX: a bigger picture
is one no viewer opens well, and drawing it would take minutes).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..files import atomic_write_text
from ..search.grid import Tile, draw_grid

OUT_SUFFIXES = (".txt", ".csv", ".json")
GRID_COLUMNS = 10
GRID_MAX = 1000  # tiles in a --grid picture: the first ones in rank order
DEFAULT_THUMB = 96


def check_out_suffix(path: Path, option: str = "--out") -> None:
    """ConfigError now for an --out whose suffix says no format we write."""
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise ConfigError(
            f"{option} {path} must end in {', '.join(OUT_SUFFIXES)}",
            f"Name the file e.g. {path.with_suffix('.txt').name} (ids), .csv (with scores) or .json",
        )


def write_ranked(path: Path, rows: list[dict[str, Any]], whole: dict[str, Any]) -> Path:
    """Write `rows` (each rank, id, location, and scores; flat) as `path`'s suffix asks; .json: `whole`."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = "".join(f"{row['id']}\n" for row in rows)
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]) if rows else ["rank", "id"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        text = buffer.getvalue()
    else:
        text = json.dumps(whole, indent=2) + "\n"
    atomic_write_text(path, text)
    return path


def read_ids(path: Path) -> list[str]:
    """The ids of a list this module wrote (.txt, .csv, .json) or of any text file, one id per line."""
    from ..files import read_json
    from ..index.manage import read_ids_file

    suffix = path.suffix.lower()
    if suffix == ".json":
        found = read_json(path, "ids file")
        rows = next(
            (found[key] for key in ("selected", "outliers") if isinstance(found, dict) and key in found),
            found,
        )
        if not isinstance(rows, list):
            raise DataError(
                f"{path} holds no list of ids", "Give the .json of 'invedge select --out', or a list of ids"
            )
        ids = [row.get("id") if isinstance(row, dict) else row for row in rows]
        if not all(isinstance(item, str) for item in ids):
            raise DataError(
                f"{path} holds entries that are not ids", "Give a list of ids, or items with an 'id'"
            )
        return ids
    if suffix == ".csv":
        lines = read_ids_file(path)
        reader = csv.DictReader(lines)
        if "id" not in (reader.fieldnames or []):
            raise DataError(
                f"{path} has no 'id' column", "Give the .csv of 'invedge select --out', or ids one per line"
            )
        return [row["id"] for row in reader]
    return read_ids_file(path)


def grid_note(count: int) -> str | None:
    """The line saying a --grid of `count` items draws only the first GRID_MAX (None: it draws all)."""
    if count <= GRID_MAX:
        return None
    return f"--grid draws the first {GRID_MAX:,} of the {count:,} items (--out lists them all)"


def ranked_grid(
    locations: list[str], captions: list[str], subcaptions: list[str], out: Path, thumb: int
) -> Path:
    """A contact sheet of the first GRID_MAX items in rank order, rows of GRID_COLUMNS (an
    unreadable image: grey)."""
    tiles = [
        Tile(loc or None, cap, sub)
        for loc, cap, sub in zip(
            locations[:GRID_MAX], captions[:GRID_MAX], subcaptions[:GRID_MAX], strict=True
        )
    ]
    rows = [tiles[at : at + GRID_COLUMNS] for at in range(0, len(tiles), GRID_COLUMNS)]
    return draw_grid(rows, out, thumb, framed=False)


def file_name(item_id: str) -> str:
    """A tile's caption: the id's last path part (ids are relative paths)."""
    return Path(item_id).name or item_id


def rounded(value: float) -> float | None:
    """A score for JSON: 6 decimals; nan (not there) → None."""
    return None if value != value else round(float(value), 6)
