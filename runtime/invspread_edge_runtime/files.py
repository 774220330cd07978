"""Atomic file writes and hashing: a killed process never leaves a half-written file behind.

Write to a temporary file in the target's folder, fsync, rename over the target, fsync the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import hooks
from .errors import ConfigError, InvedgeError, WriteError

_TEMP_NAME = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+\.tmp$")  # what atomic_path's mkstemp names look like


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    The caller writes the temporary file by any means (numpy, safetensors, onnx); on an exception
    the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise os_error(exc, target) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what a plain open() would
        os.replace(tmp, target)
        fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, target) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Read JSON, raising one clear error for a missing, unreadable or damaged file."""
    path = Path(path)
    check_regular(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvedgeError(f"{what} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise InvedgeError(f"{what} {path} is a folder, not a file") from exc
    except OSError as exc:
        raise InvedgeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise InvedgeError(f"{what} is damaged (not valid JSON): {path}") from exc


def check_regular(path: str | os.PathLike[str], what: str = "file") -> None:
    """Refuse a FIFO, socket or device where a file is expected: reading one would wait forever.

    A missing path or a folder passes (the caller's own read gives the right error for those).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket or device"
        raise InvedgeError(f"{what} {path} is {kind}, not a regular file", "Give the path of a regular file")


def write_npy(fh: BinaryIO, array: np.ndarray, digest: Any = None) -> None:
    """Write `array` as .npy with ordinary buffered writes (header, then the raw rows).

    Not `np.save` on a real file (its `tofile` reports a full disk as "N requested and M written",
    with no errno) and not a memory map (a full disk kills the process with SIGBUS): here a full
    disk is an OSError(ENOSPC) like any other write. `digest` (a hashlib object) sees every byte.
    """
    array = np.ascontiguousarray(array)
    write_npy_header(fh, array.dtype, array.shape, digest)
    write_rows(fh, array, digest)


def write_npy_header(fh: BinaryIO, dtype: Any, shape: tuple[int, ...], digest: Any = None) -> None:
    """The .npy header (format 1.0) of a C-ordered array of `dtype` and `shape`."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    _write(fh, buffer.getvalue(), digest)


def write_rows(fh: BinaryIO, array: np.ndarray, digest: Any = None, rows_per_write: int = 65536) -> None:
    """The raw bytes of `array` (C order), a block of rows at a time (bounded memory for memmaps)."""
    for start in range(0, len(array), rows_per_write):
        block = np.ascontiguousarray(array[start : start + rows_per_write])
        _write(fh, memoryview(block.reshape(-1).view(np.uint8)), digest)


def _write(fh: BinaryIO, data: bytes | memoryview, digest: Any) -> None:
    fh.write(data)
    if digest is not None:
        digest.update(data)


def leftovers(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[Path]:
    """Temporary files that `atomic_path` left in `folder` when its process died (`.NAME.XXXX.tmp`).

    `names`: only those of these targets (default: any). Only remove them while holding the lock
    of what `folder` belongs to: a live writer's temporary file has the same form.
    """
    folder = Path(folder)
    wanted = None if names is None else set(names)
    found = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMP_NAME.match(entry.name)
            if match and (wanted is None or match.group(1) in wanted) and not entry.is_dir():
                found.append(entry)
    return sorted(found)


def remove_leftovers(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> int:
    """Delete `leftovers(folder, names)` (under the lock); returns how many."""
    removed = 0
    for path in leftovers(folder, names):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def human_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def user_cache_dir(sub: str) -> Path:
    """The one home of invedge's caches (engines, ort-trt, map layouts): `$XDG_CACHE_HOME` (an empty
    one ignored) or `~/.cache`, then `invspread-edge/SUB`."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "invspread-edge" / sub


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in `folder` durable."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


PROBE_PREFIX = ".invedge-probe-"


def probe_write(folder: str | os.PathLike[str]) -> None:
    """Create and remove a file in `folder` (raises OSError): permissions, a read-only or full file
    system show up before any work, not after minutes of it."""
    fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
    os.close(fd)
    os.unlink(name)


def replace_folder(new: Path, target: Path, aside: Path | None = None, hook_point: str | None = None) -> None:
    """Put the complete folder `new` in place of `target`: the old one is renamed to `aside`
    (default `.NAME.old` beside it) first and removed only after, so a crash leaves the old or the
    new folder whole; the writer's recovery, under its lock, finishes or undoes the swap.

    A swap that fails says so, naming the folders: the new folder not put in place (the old one is
    renamed back), or the old one not removed once the new one is in place (InvedgeError: the
    copy left at `aside` is named, never left behind in silence). An `aside` left by an earlier
    swap is removed first (InvedgeError naming it when it cannot be).

    `hook_point`: the `hooks.reached` point between the two renames (the old folder aside, the new
    one not yet in place).
    """
    aside = aside or default_aside(target)
    if aside.exists() or aside.is_symlink():
        remove_aside(aside, target)
    moved = target.exists()
    if moved:
        os.rename(target, aside)
    if hook_point:
        hooks.reached(hook_point)
    try:
        os.rename(new, target)
    except OSError:
        if moved:
            os.rename(aside, target)  # the old folder back: the swap did not happen
        raise
    fsync_dir(target.absolute().parent)
    if moved:
        remove_aside(aside, target, replaced=True)


FOLDER_MARKER = ".invedge-folder"  # in each output folder invedge writes whole: what wrote it


def folder_writer(folder: Path) -> str | None:
    """What wrote `folder` (its FOLDER_MARKER's first line), or None: not a folder invedge wrote."""
    marker = folder / FOLDER_MARKER
    if folder.is_symlink() or marker.is_symlink() or not marker.is_file():
        return None
    try:
        return marker.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        return None


def check_folder_target(folder: Path, option: str, writer: str, *, replace: bool = False) -> None:
    """Refuse `folder` as an output before any work, in one line: a file or link; a folder holding
    anything, unless `replace` and `writer` wrote it (its marker says so: a user's folder is never
    replaced, whatever it holds); or a parent that cannot be written."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"{option} {folder} is not a folder", f"Give {option} a new folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not replace:
            raise ConfigError(
                f"{option} {folder} already exists and is not empty", f"Give {option} a new folder"
            )
        if folder_writer(folder) != writer:
            raise ConfigError(
                f"{option} {folder} is not an earlier output of {writer} (it has no {FOLDER_MARKER} of "
                "one): it is never replaced",
                f"Give {option} a new folder, or move that one away",
            )
    parent = folder.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe_write(parent)
    except OSError as exc:
        raise WriteError(
            f"cannot write {option} {folder}: {exc.strerror or exc}", "Choose a writable folder"
        ) from exc


@contextlib.contextmanager
def staged_folder(
    target: Path,
    option: str,
    writer: str,
    *,
    replace: bool = False,
    lock: contextlib.AbstractContextManager[Any] | None = None,
) -> Iterator[Path]:
    """Yield an empty folder beside `target` (mode as the umask gives a new folder) to fill; on
    success it is marked as `writer`'s and swapped in whole (`replace_folder`), on failure removed.

    `target` is checked first and again just before the swap (`check_folder_target`: an existing
    folder is replaced only when `replace` and `writer` wrote it); `lock`: a lock held (entered
    here) for the second check and the swap, e.g. `locks.exclusive_lock(target, "...")`.
    """
    target = Path(target)
    check_folder_target(target, option, writer, replace=replace)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.absolute().parent))
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700: the output reads like any folder
    except OSError as exc:
        raise os_error(exc, target, atomic=False) from exc
    try:
        yield work
        (work / FOLDER_MARKER).write_text(writer + "\n", encoding="utf-8")
        with lock or contextlib.nullcontext():
            check_folder_target(target, option, writer, replace=replace)  # another run may have written it
            replace_folder(work, target)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise os_error(exc, target, atomic=False) from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def default_aside(target: Path) -> Path:
    """Where `replace_folder` keeps the old `target` during a swap, unless told: `.NAME.old` beside it."""
    return target.parent / f".{target.name}.old"


def remove_aside(aside: Path, target: Path, *, replaced: bool = False) -> None:
    """Delete `aside`, the old copy of `target` that a swap moved out of its way (call under the
    lock of `target`); InvedgeError naming it (and why) when it cannot be, or when it is not a
    folder (then it is not ours to delete). `replaced`: the new `target` is in place already."""
    done = f"{target} was replaced, but its old copy" if replaced else f"the old copy of {target}"
    _refuse_foreign_aside(aside, target)
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        where = f" ({os.fsdecode(exc.filename)})" if exc.filename else ""
        raise InvedgeError(
            f"{done}, moved aside to {aside}, cannot be removed: {exc.strerror or exc}{where}",
            f"Remove it by hand (rm -rf {shlex.quote(str(aside))}), then run the command again",
        ) from exc


def _refuse_foreign_aside(aside: Path, target: Path) -> None:
    """A file or link where a swap keeps the old folder is not one a swap left: never ours to
    delete, or to rename into `target`'s place."""
    if aside.is_symlink() or not aside.is_dir():
        raise InvedgeError(
            f"{aside} is not a folder: a swap of {target} keeps the old folder there, and this is not one it left",
            "Move it elsewhere or delete it, then run the command again",
        )


def unremovable(folder: Path) -> Path | None:
    """The first folder in `folder` (itself included) whose entries this process may not delete
    (no write permission), or None. Work that ends by removing `folder` (the old copy of an
    --overwrite swap) checks it first: a read-only folder is refused before any work, not found out
    once the new result is in place. (Root passes: it deletes whatever the permission bits say.)"""
    for dirpath, _, _ in os.walk(folder):
        if not os.access(dirpath, os.W_OK | os.X_OK):
            return Path(dirpath)
    return None


def recover_swap(
    target: Path, aside: Path, staging: Path, complete: Callable[[Path], bool] = Path.is_dir
) -> str | None:
    """Finish or undo a `replace_folder` swap that a kill cut short (call under `target`'s lock).

    `aside` exists only during a swap: the old folder, moved out of the way of the new one, which
    was built in `staging`. `complete(folder)`: whether a folder holds a whole result (e.g. its
    manifest, written last).
    - `aside` and a complete `target`: the swap was done; the old copy goes;
    - `aside` and no `target`: the complete `staging` moves in if there is one, else `aside` back;
    - no `aside`, or a `target` that is there but not complete: nothing is touched.
    An `aside` that cannot be removed, or is not a folder, raises InvedgeError naming it.
    What a `staging` folder means when no swap was begun (an unfinished result to drop, or a
    finished one to swap in) is the caller's to decide. Returns what was done, or None.
    """
    if not aside.exists() and not aside.is_symlink():
        return None
    _refuse_foreign_aside(aside, target)
    if complete(target):
        remove_aside(aside, target)  # InvedgeError naming it when it cannot be removed
        return "removed the old folder of a finished swap"
    if target.exists():
        return None
    if complete(staging):
        os.rename(staging, target)
        fsync_dir(target.absolute().parent)
        remove_aside(aside, target, replaced=True)
        done = "completed an interrupted swap"
    else:
        os.rename(aside, target)
        done = "restored the previous folder"
    fsync_dir(target.absolute().parent)
    return done


def os_error(exc: OSError, target: Path, *, atomic: bool = True) -> WriteError:
    """The one-line error for a failed write of `target` (disk full, permissions, ...).

    `atomic`: the failed write left `target` as it was (`atomic_path`'s promise), so the message
    may say what is kept; False where that is not known (an OSError from anywhere).
    """
    if exc.errno == errno.ENOSPC:
        kept = ""
        if atomic and target.is_file():
            kept = f"; the previous {target.name} is intact"
        elif atomic and not target.exists():
            kept = f"; nothing was written to {target.name}"
        return WriteError(
            f"disk full while writing {target}", f"Free some space and run the same command again{kept}"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"cannot write {target}: {exc.strerror}", "Choose a writable output folder")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir(parents) meets a file where a folder must be
        return WriteError(
            f"cannot write {target}: a file stands where a folder is expected in its path",
            "Choose another output path",
        )
    return WriteError(
        f"cannot write {target}: {exc.strerror or exc}", "Check the path and run the same command again"
    )
