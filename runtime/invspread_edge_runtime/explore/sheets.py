"""Pictures of clusters: a contact sheet per cluster, and one summary with a row per cluster.

A sheet shows a cluster's most typical items first (nearest its centre), each captioned with its
file name and its cosine to the centre; the summary starts each row with the cluster's number and
size. Drawn by search/grid.py: an image that cannot be read is a grey tile, never an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..search.grid import Tile, draw_grid
from .cluster import NOISE

if TYPE_CHECKING:
    from .cluster import Clustering

SHEET_COLUMNS = 8
SUMMARY_PER_ROW = 8  # items after each row's label tile
SUMMARY_ROWS = 200  # clusters drawn in the summary, the largest first (a taller picture is unviewable)
DEFAULT_PER_SHEET = 48
DEFAULT_THUMB = 96


def cluster_name(cluster: int, k: int) -> str:
    """cluster_007 (three digits at least, more when k needs them), or noise."""
    return "noise" if cluster == NOISE else f"cluster_{cluster:0{max(3, len(str(k - 1)))}d}"


def contact_sheet(
    clustering: Clustering,
    cluster: int,
    out: Path,
    *,
    per_sheet: int = DEFAULT_PER_SHEET,
    thumb: int = DEFAULT_THUMB,
) -> Path:
    """Write the PNG of `cluster`'s first `per_sheet` members, rows of SHEET_COLUMNS."""
    tiles = [_tile(clustering, i) for i in clustering.members(cluster)[:per_sheet]]
    rows = [tiles[at : at + SHEET_COLUMNS] for at in range(0, len(tiles), SHEET_COLUMNS)]
    return draw_grid(rows, out, thumb, framed=False)


def summary_sheet(clustering: Clustering, out: Path, *, thumb: int = DEFAULT_THUMB) -> Path:
    """Write the PNG with a row per cluster (the SUMMARY_ROWS largest; noise last, when there is
    some): a label tile, then the SUMMARY_PER_ROW most typical members."""
    shown = list(range(min(clustering.k, SUMMARY_ROWS))) + ([NOISE] if clustering.noise else [])
    rows = []
    for cluster in shown:
        members = clustering.members(cluster)
        name = "noise" if cluster == NOISE else f"cluster {cluster}"
        label = Tile(None, "", placeholder=f"{name}\n{len(members):,} items")
        rows.append([label] + [_tile(clustering, i) for i in members[:SUMMARY_PER_ROW]])
    return draw_grid(rows, out, thumb)


def _tile(clustering: Clustering, row: int) -> Tile:
    closeness = clustering.closeness[row]
    score = "" if closeness != closeness else f"cos {closeness:.3f}"  # nan: noise, no centre
    location = clustering.locations[row]
    return Tile(location or None, Path(clustering.ids[row]).name, score)
