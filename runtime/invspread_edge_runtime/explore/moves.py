"""Moving the near-duplicates that are not kept out of the way, undoably; never deleting a file.

`move_duplicates` writes its manifest (`DIR/invedge-moves.json`: each file's from → to and sha256)
before the first file moves, and again when all have: a run killed midway is undone like a
finished one, since `undo_moves` looks at where each file is now. A file is moved by a hard link
then the removal of its old name (or, across file systems, copied to a new name that must not exist,
checked against its sha256, then the original removed): never over an existing file. `undo_moves`
refuses a manifest whose files lie outside its folder or the images' root it records.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import hooks
from ..errors import ConfigError, DataError, InvedgeError
from ..files import atomic_write_json, check_folder_target, fsync_dir, os_error, read_json, sha256_file
from ..index.manage import Progress, no_progress
from .dedup import DuplicateGroups
from .items import ExploreItems, common_root

MANIFEST_NAME = "invedge-moves.json"
FORMAT = "invedge-moves/1"


@dataclass
class MoveResult:
    """What `move_duplicates` or `undo_moves` did; `to_dict()` is part of the command's --json."""

    manifest: Path
    moved: list[dict[str, str]] = field(default_factory=list)  # entries done now ({from, to, id})
    left: list[str] = field(default_factory=list)  # a line for each file not handled, and why

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": str(self.manifest), "moved": len(self.moved), "left": self.left}


def check_move_target(folder: Path) -> None:
    """Refuse a --move-to folder that exists and is not empty (or is a file), before any work."""
    check_folder_target(folder, "--move-to", "invedge dedup --move-to")


def check_outside_root(folder: Path, root: Path | None) -> None:
    """Refuse a --move-to folder inside the images' root (`root`; None: not known, nothing to check):
    a later embed of that folder would find the moved copies again."""
    if root is None:
        return
    root = root.absolute().resolve()
    real = folder.absolute().resolve()
    if real == root or root in real.parents:
        raise ConfigError(
            f"--move-to {folder} lies inside the images' folder {root}: a later embed of the folder "
            "would pick the copies up again",
            f"Give a folder outside {root}",
        )


def items_root(items: ExploreItems) -> Path | None:
    """The images' root folder: the one the embeddings record, else the deepest holding them all."""
    return items.root or common_root(items.locations)


def plan_moves(found: DuplicateGroups, folder: Path) -> tuple[Path, list[dict[str, str]]]:
    """(the images' root, each non-kept member's move from its file to the same relative path under
    `folder`). Paths are resolved (links and `..` followed): DataError when a member's file is
    unknown, missing, or outside the images' root."""
    items = found.items
    rows = [(row, g.kept) for g in found.groups for row in g.members if row != g.kept]
    unknown = [items.ids[row] for row, _ in rows if not items.locations[row]]
    if unknown:
        raise DataError(
            f"the image files of {len(unknown)} duplicates are not known (e.g. {unknown[0]}), so they cannot be moved",
            "Give the embeddings folder made by 'invedge embed' (it records the images' folder)",
        )
    sources = [_real(Path(items.locations[row])) for row, _ in rows]
    root = (items.root or common_root([str(s) for s in sources]) or Path("/")).resolve()
    check_outside_root(folder, items_root(items))
    folder = folder.absolute().resolve()
    moves = []
    for (row, kept), source in zip(rows, sources, strict=True):
        if not source.is_file():
            raise DataError(f"{source} (a duplicate to move) is not there", "Check the images' folder")
        if not _inside(source, root):
            raise DataError(
                f"{source} (the file of duplicate {items.ids[row]!r}) lies outside the images' folder {root}",
                "Check the ids and the images' folder of the embeddings",
            )
        to = folder / source.relative_to(root)
        moves.append({"id": items.ids[row], "kept": items.ids[kept], "from": str(source), "to": str(to)})
    taken = [m["to"] for m in moves]
    if len(set(taken)) != len(taken):
        raise DataError(
            "two duplicates would be moved to one path",
            "Give the embeddings folder (it records the images' root)",
        )
    return root, moves


def _real(path: Path) -> Path:
    """`path` absolute, its folders' links and `..` resolved, the file itself kept (a link to an
    image is moved as the link it is)."""
    return path.absolute().parent.resolve() / path.name


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` (resolved as `_real` does) lies under `folder` (resolved)."""
    real = _real(path)
    return real.name not in ("", ".", "..") and folder in real.parents


def move_duplicates(found: DuplicateGroups, folder: Path, *, progress: Progress = no_progress) -> MoveResult:
    """Move every non-kept member's file into `folder`, keeping its path under the images' root;
    the manifest is written first (state "moving") and last (state "done")."""
    check_move_target(folder)
    folder = folder.absolute().resolve()
    root, moves = plan_moves(found, folder)
    for move in moves:
        move["sha256"] = sha256_file(move["from"])
    manifest = folder / MANIFEST_NAME
    record = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": found.items.source,
        "root": str(root),
        "threshold": found.threshold,
        "keep": found.keep,
        "state": "moving",
        "moves": moves,
    }
    atomic_write_json(manifest, record)  # before any file moves: a kill from here on is undoable
    result = MoveResult(manifest)
    with progress(len(moves), "moving duplicates") as on_progress:
        for done, move in enumerate(moves, 1):
            _move(Path(move["from"]), Path(move["to"]), move["sha256"])
            result.moved.append(move)
            hooks.reached("dedup-move")
            if on_progress is not None:
                on_progress(done, len(moves))
    atomic_write_json(manifest, record | {"state": "done"})
    return result


def undo_moves(manifest: Path, *, progress: Progress = no_progress) -> MoveResult:
    """Move the files of a --move-to back where they were (also after a run killed midway).

    A file whose original path is taken again, or whose content changed since (sha256), is left
    where it is and named in `left`; so is one found in neither place."""
    record = _read_manifest(manifest)
    _check_paths(manifest, record)
    result = MoveResult(manifest)
    moves = record["moves"]
    with progress(len(moves), "moving back") as on_progress:
        for done, move in enumerate(moves, 1):
            _undo_one(move, result)
            if on_progress is not None:
                on_progress(done, len(moves))
    _remove_empty_folders(manifest.absolute().parent.resolve(), moves)
    atomic_write_json(manifest, record | {"state": "undone" if not result.left else "partly undone"})
    return result


def _undo_one(move: dict[str, str], result: MoveResult) -> None:
    source, target = Path(move["from"]), Path(move["to"])
    there, back = target.exists() or target.is_symlink(), source.exists() or source.is_symlink()
    if not there:
        if not back:
            result.left.append(f"{target}: not found in either place (was it moved or deleted since?)")
        return  # not moved yet (a run stopped before it), or moved back already
    if back:
        result.left.append(f"{target}: a file stands at its original path {source} again; left as it is")
        return
    if sha256_file(target) != move["sha256"]:
        result.left.append(f"{target}: changed since it was moved (sha256 differs); left as it is")
        return
    _move(target, source, move["sha256"])
    result.moved.append(move)


def _move(source: Path, target: Path, sha256: str) -> None:
    """Move `source` to `target`, never over an existing file (one that appears meanwhile too): a
    hard link to the new name, then the old name removed; across file systems (or where hard links
    are not supported), a checked copy linked in under the new name, then the original removed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise _taken(target) from None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise os_error(exc, target, atomic=False) from exc
        _copy_in(source, target, sha256)
    source.unlink()  # the file is under its new name: this is the move's second half
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def _taken(target: Path) -> InvedgeError:
    return InvedgeError(
        f"{target} exists already: it was not overwritten", "Move it elsewhere, then run again"
    )


def _copy_in(source: Path, target: Path, sha256: str) -> None:
    """Copy `source` beside `target`, check it, then link it in under `target` (refused when a
    file took that name meanwhile: a link never replaces one, unlike a rename)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        shutil.copy2(source, tmp, follow_symlinks=False)
        if sha256_file(tmp) != sha256:
            raise InvedgeError(f"copying {source} to {target} gave different bytes", "Check the disks")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target, follow_symlinks=False)
        except FileExistsError:
            raise _taken(target) from None
        except OSError as exc:
            raise os_error(exc, target, atomic=False) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_manifest(manifest: Path) -> dict[str, Any]:
    try:
        record = read_json(manifest, "moves manifest")
    except InvedgeError as exc:
        if exc.hint:
            raise
        raise DataError(
            exc.message,
            "The moved files are still in that folder under their paths relative to the images' folder: "
            "move them back by hand, or give the manifest of another --move-to",
        ) from exc
    moves = record.get("moves") if isinstance(record, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("format") != FORMAT
        or not isinstance(moves, list)
        or not all(isinstance(m, dict) and {"from", "to", "sha256"} <= set(m) for m in moves)
    ):
        raise DataError(
            f"{manifest} is not a manifest of 'invedge dedup --move-to'",
            f"Give the {MANIFEST_NAME} in the --move-to folder",
        )
    return record


def _check_paths(manifest: Path, record: dict[str, Any]) -> None:
    """Refuse the whole manifest, before any file moves, when an entry's `to` is not under the
    manifest's folder or its `from` not under the images' root it records (paths resolved): an
    edited or crafted manifest never moves a file elsewhere."""
    folder = manifest.absolute().parent.resolve()
    root_text = record.get("root")
    root = Path(root_text).resolve() if isinstance(root_text, str) and Path(root_text).is_absolute() else None
    for move in record["moves"]:
        to, source = str(move["to"]), str(move["from"])
        if root is None or not (Path(to).is_absolute() and _inside(Path(to), folder)):
            bad = "it records no images' folder" if root is None else f"{to} is not under {folder}"
        elif not (Path(source).is_absolute() and _inside(Path(source), root)):
            bad = f"{source} is not under the images' folder {root}"
        else:
            continue
        raise DataError(
            f"{manifest} was not written by 'invedge dedup --move-to' as it stands ({bad}); nothing was moved",
            f"Give the {MANIFEST_NAME} that --move-to wrote, unedited",
        )


def _remove_empty_folders(folder: Path, moves: list[dict[str, str]]) -> None:
    """The sub-folders a move made in `folder`, now empty again (never a file, never `folder`)."""
    for move in moves:
        parent = Path(move["to"]).parent
        while parent != folder and folder in parent.parents:
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent
