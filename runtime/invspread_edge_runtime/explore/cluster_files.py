"""`invedge cluster --out DIR`: the clusters as files, and reading them back (`invedge map --clusters`).

    DIR/assignments.csv      id, cluster (-1: noise), cos (to the cluster's centre), location
    DIR/clusters.json        what `--json` prints, and the files below
    DIR/sheets/cluster_000.png …  (and noise.png): each cluster's most typical images first
    DIR/summary.png          a row per cluster

The folder is built beside DIR and swapped in only when complete (files.staged_folder). An existing
DIR is refused unless empty, or `overwrite` and an earlier `invedge cluster --out` wrote it (its
files.FOLDER_MARKER says so: a folder of anything else is never replaced).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError
from ..files import (
    atomic_write_json,
    atomic_write_text,
    check_folder_target,
    folder_writer,
    read_json,
    staged_folder,
)
from ..index.manage import Progress, no_progress
from ..locks import exclusive_lock
from .cluster import NOISE
from .sheets import DEFAULT_PER_SHEET, DEFAULT_THUMB, cluster_name, contact_sheet, summary_sheet

if TYPE_CHECKING:
    from .cluster import Clustering

ASSIGNMENTS, CLUSTERS_JSON, SHEETS, SUMMARY = "assignments.csv", "clusters.json", "sheets", "summary.png"
CSV_FIELDS = ("id", "cluster", "cos", "location")
WRITER = "invedge cluster --out"  # the folder's marker (files.FOLDER_MARKER)


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse `out` before any work: a file, a non-empty folder (unless `overwrite` and it is an
    earlier output), or a parent that cannot be written."""
    try:
        check_folder_target(out, "--out", WRITER, replace=overwrite)
    except ConfigError as exc:
        if overwrite or folder_writer(out) != WRITER:
            raise
        raise ConfigError(exc.message, "Give --out a new folder, or --overwrite to replace it") from None


def write_cluster_folder(
    clustering: Clustering,
    out: Path,
    *,
    overwrite: bool = False,
    per_sheet: int = DEFAULT_PER_SHEET,
    thumb: int = DEFAULT_THUMB,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Write `out` (module docstring); returns the files written, relative to `out`."""
    out = Path(out)
    lock = exclusive_lock(out, "cluster folder")
    with staged_folder(out, "--out", WRITER, replace=overwrite, lock=lock) as work:
        files = _write_files(clustering, work, per_sheet, thumb, progress)
        atomic_write_json(work / CLUSTERS_JSON, clustering.to_dict() | {"files": files})
    return files


def _write_files(
    clustering: Clustering, work: Path, per_sheet: int, thumb: int, progress: Progress
) -> dict[str, Any]:
    atomic_write_text(work / ASSIGNMENTS, _assignments_csv(clustering))
    (work / SHEETS).mkdir()
    clusters = list(range(clustering.k)) + ([NOISE] if clustering.noise else [])
    sheets: dict[str, str] = {}
    with progress(len(clusters), "contact sheets") as on_progress:
        for done, cluster in enumerate(clusters, 1):
            name = f"{SHEETS}/{cluster_name(cluster, clustering.k)}.png"
            contact_sheet(clustering, cluster, work / name, per_sheet=per_sheet, thumb=thumb)
            sheets[str(cluster)] = name
            if on_progress is not None:
                on_progress(done, len(clusters))
    if clusters:
        summary_sheet(clustering, work / SUMMARY, thumb=thumb)
    return {"assignments": ASSIGNMENTS, "summary": SUMMARY if clusters else None, "sheets": sheets}


def _assignments_csv(clustering: Clustering) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row, (item, cluster) in enumerate(zip(clustering.ids, clustering.assignments, strict=True)):
        cos = clustering.closeness[row]
        shown = "" if cos != cos else f"{cos:.6f}"  # nan: noise
        writer.writerow((item, int(cluster), shown, clustering.locations[row]))
    return text.getvalue()


def read_assignments(path: str | os.PathLike[str]) -> dict[str, int]:
    """id → cluster (-1: noise) from a `--out` folder, its clusters.json or its assignments.csv."""
    path = Path(path)
    if path.is_dir():
        path = path / CLUSTERS_JSON
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    found = read_json(path, "cluster assignments")
    assignments = found.get("assignments") if isinstance(found, dict) else None
    if not isinstance(assignments, dict):
        raise DataError(
            f"{path} has no assignments", "Give the clusters.json written by 'invedge cluster --out'"
        )
    return {str(item): int(cluster) for item, cluster in assignments.items()}


def _read_csv(path: Path) -> dict[str, int]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return {row["id"]: int(row["cluster"]) for row in csv.DictReader(fh)}
    except FileNotFoundError:
        raise DataError(f"{path} not found", "Check the path") from None
    except (KeyError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(
            f"{path} is not an assignments.csv of 'invedge cluster' ({exc})", "Give the file written by --out"
        ) from None
