"""`--link-to DIR`: a folder per cluster holding symbolic links to its images, ready to name.

Links are relative (the tree still works when the images' folder and DIR move together) and named
after the image file (`name_2.jpg` when two images of a cluster share a name); an item whose
image is unknown or gone gets none (counted: never a dangling link). The folder is
built beside DIR and renamed into place when complete: a failed run leaves no half tree. A DIR
that exists and holds anything is refused; the images themselves are never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import check_folder_target, staged_folder
from ..index.manage import Progress, no_progress
from ..locks import exclusive_lock
from .cluster import NOISE
from .sheets import cluster_name

if TYPE_CHECKING:
    from .cluster import Clustering


@dataclass
class Links:
    folder: Path
    linked: int  # links made
    missing: int  # items whose image file is unknown or gone (no link: never a dangling one)

    def to_dict(self) -> dict[str, object]:
        return {"folder": str(self.folder), "linked": self.linked, "missing": self.missing}


WRITER = "invedge cluster --link-to"  # the folder's marker (files.FOLDER_MARKER)


def check_link_folder(folder: Path) -> None:
    """Refuse --link-to `folder` before any work: a file, a folder holding anything (it may hold
    names given by hand: never replaced), or a parent that cannot be written."""
    check_folder_target(folder, "--link-to", WRITER)


def link_clusters(clustering: Clustering, folder: Path, *, progress: Progress = no_progress) -> Links:
    """Make `folder`/cluster_000/… (and noise/) of relative links to each cluster's images."""
    folder = Path(folder)
    linked = missing = 0
    lock = exclusive_lock(folder, "link folder")
    with staged_folder(folder, "--link-to", WRITER, lock=lock) as work:
        final = folder.absolute().parent.resolve() / folder.name  # where `work` will be once in place
        clusters = list(range(clustering.k)) + ([NOISE] if clustering.noise else [])
        with progress(len(clustering), f"linking into {folder}") as on_progress:
            for cluster in clusters:
                name = cluster_name(cluster, clustering.k)
                made, gone = _link_cluster(clustering, cluster, work / name, final / name)
                linked, missing = linked + made, missing + gone
                if on_progress is not None:
                    on_progress(linked + missing, len(clustering))
    return Links(folder, linked, missing)


def _link_cluster(clustering: Clustering, cluster: int, target: Path, final: Path) -> tuple[int, int]:
    """Links in `target` to `cluster`'s images, relative to `final` (where `target` will be once in
    place; both resolved: the kernel follows a relative link from the real folder): (made, missing)."""
    target.mkdir()
    taken: set[str] = set()
    made = missing = 0
    for row in clustering.members(cluster):
        location = clustering.locations[row]
        if not location or not os.path.isfile(location):
            missing += 1
            continue
        name = _free_name(Path(location).name, taken)
        os.symlink(os.path.relpath(_resolved(Path(location)), final), target / name)
        made += 1
    return made, missing


def _free_name(name: str, taken: set[str]) -> str:
    stem, suffix, n = Path(name).stem, Path(name).suffix, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}{suffix}"
    taken.add(name)
    return name


def _resolved(path: Path) -> Path:
    """`path` with its folders' links resolved, the file itself kept (a linked image stays itself)."""
    return path.absolute().parent.resolve() / path.name
