"""A training run's folder on disk: lock, staging, swap, recovery, run.json, metrics.jsonl, curves.

RUN holds checkpoint.safetensors (checkpoint.py), run.json, metrics.jsonl and curves.png; rank 0
writes them, each atomically. The folder is never left half-replaced, and nothing in it is touched
before the new run can start:
- The folder is locked (`exclusive_lock`, timeout 0) for the whole run (`locked`): a second
  `invedge train --out RUN` or `--resume RUN` fails at once, naming the process that trains.
- Everything is checked first (run_setup.py): the options, the checkpoint (resume), the data,
  the kNN monitor's data, and that the folder is writable (`check_writable`).
- A new run in a folder that holds no run is written there directly. With `--overwrite` over a
  run, the new run is built in the hidden sibling `.RUN.staging` and swapped in (`swap_in`) once
  it holds a first real result: at the end of its first epoch (checkpoint, run.json, metrics,
  curves). Until then RUN is the old run, untouched: an error, a Ctrl-C or a kill -9 before the
  swap leaves it as it was (a few steps of a new run are not worth a finished one). The swap
  exchanges the two folders atomically (Linux renameat2; elsewhere two renames), after
  hard-linking the files the user keeps in RUN (e.g. an export/ folder) into the new one; so at
  every moment RUN is the complete old run or the complete new one.
- The next run on RUN (train or resume) first removes what a killed run left behind: a staging
  folder, a replaced old run, temporary files of its atomic writes (`recover_run_folder`).
Test hooks (invspread_edge_runtime/hooks.py): run-swap (before the swap), run-swapped (after the
exchange, before the old run is removed); the checkpoint's own, checkpoint-save, is in checkpoint.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from invspread_edge_runtime import hooks
from invspread_edge_runtime.errors import CheckpointError, DataError, InvedgeError
from invspread_edge_runtime.files import (
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    os_error,
    probe_write,
    read_json,
    recover_swap,
    remove_leftovers,
    replace_folder,
)
from invspread_edge_runtime.locks import exclusive_lock

from .checkpoint import CHECKPOINT_NAME, RUN_JSON, load_checkpoint
from .config import fits

RUN_FORMAT = "invspread-edge/run/1"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
RUN_FILES = (CHECKPOINT_NAME, RUN_JSON, METRICS_NAME, CURVES_NAME)  # what training writes in RUN

Warn = Callable[[str], None]


def _silent(message: str) -> None:
    pass


# --- before the run: where it may go ---------------------------------------------------------------


def check_new_out(run_dir: Path, data: str) -> None:
    """--out of a new run: a folder (or nothing yet), and not inside the training images."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InvedgeError(f"--out {run_dir} is a file, not a folder", "Choose another --out")
    data_dir = Path(data)
    if data_dir.is_dir() and run_dir.resolve().is_relative_to(data_dir.resolve()):
        # curves.png and the export's probe images would join the training images: the next
        # run trains on them, and --resume refuses (the data's fingerprint changed)
        raise InvedgeError(
            f"--out {run_dir} is inside the training data {data_dir}",
            "Choose an --out outside the image folder",
        )


def check_resumable(run_dir: Path) -> None:
    """--resume RUN: a folder that holds a checkpoint (else the one-line "no checkpoint" error)."""
    if run_dir.is_file():
        raise InvedgeError(
            f"--resume takes a run folder, and {run_dir} is a file",
            f"Pass the folder that holds it: --resume {run_dir.parent}",
        )
    if not (run_dir / CHECKPOINT_NAME).is_file():
        load_checkpoint(run_dir)  # raises the one-line "no checkpoint" error


def check_writable(folder: Path, hint: str) -> None:
    """Create and remove a file in `folder`: permissions, a read-only or full file system show here,
    before any training, not at the first checkpoint."""
    try:
        probe_write(folder)
    except OSError as exc:
        raise InvedgeError(f"cannot write in {folder}: {exc.strerror or exc}", hint) from exc


def held_run_files(run_dir: Path) -> list[str]:
    """Which of training's files `run_dir` holds (a folder holding any of them holds a run)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def staging_path(run_dir: Path) -> Path:
    """Where `--overwrite` builds the new run until it replaces the old one."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.staging"


def replaced_path(run_dir: Path) -> Path:
    """Where the old run waits during a swap that cannot exchange the folders atomically."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.replaced"


# --- the lock and what a killed run left -----------------------------------------------------------


@contextlib.contextmanager
def locked(run_dir: Path, main: bool, warn: Warn = _silent) -> Iterator[None]:
    """Hold RUN's lock for the whole run (rank 0 only), cleaning up before and after: a killed
    run's leftovers first, and on the way out a staged run that never reached its swap (an error
    or a second Ctrl-C)."""
    if not main:
        yield
        return
    with exclusive_lock(run_dir, "run folder", timeout=0):
        recover_run_folder(run_dir, warn)
        try:
            yield
        finally:
            with contextlib.suppress(InvedgeError):
                recover_run_folder(run_dir, warn)


def recover_run_folder(run_dir: Path, warn: Warn = _silent) -> None:
    """Remove what a killed run left behind; call with the run folder's lock held.

    - `.RUN.replaced` exists only between the two renames of a non-atomic swap: the staged run
      was complete, so it is moved into place (or, without it, the old run back), then removed.
    - `.RUN.staging`: a new run that never reached its swap (the old run in RUN is intact), or,
      right after an atomic exchange, the old run: either way it goes.
    - `.NAME.*.tmp` in RUN: temporary files of atomic writes cut short (see invspread_edge_runtime/files.py).
    """
    run_dir = Path(run_dir)
    staging, replaced = staging_path(run_dir), replaced_path(run_dir)
    try:
        was_there = run_dir.exists()
        done = recover_swap(run_dir, replaced, staging)  # the same rule as the runtime's folders
        if done and not was_there:
            warn(f"{run_dir}: {done} of a run that was cut short")
        if staging.exists():
            shutil.rmtree(staging)
        if run_dir.is_dir():
            remove_leftovers(run_dir, RUN_FILES)
    except OSError as exc:
        raise os_error(exc, staging) from exc


# --- what a resumed run reads back -----------------------------------------------------------------


def read_metrics(run_dir: Path, epochs_done: int) -> list[dict[str, Any]]:
    """metrics.jsonl up to the checkpoint's epoch (a kill may have left a later line).

    A damaged line is refused, not dropped: the resumed run rewrites the file, which would lose it.
    """
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"cannot read {path} ({exc.__class__.__name__})", "Make it readable, or move it away and resume"
        ) from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rec = None
        if not (isinstance(rec, dict) and fits(rec.get("epoch"), "int") and fits(rec.get("loss"), "float")):
            raise CheckpointError(
                f"{path} line {number} is damaged (not a metrics record)",
                "Repair or delete that line (the resumed run rewrites the file), then resume again",
            )
        if rec["epoch"] <= epochs_done:
            out.append(rec)
    return out


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """The run's run.json when it is ours; {} when there is none. Someone else's file is refused:
    resuming rewrites run.json, which would destroy it."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        return {}
    try:
        info = read_json(path, "run.json")
    except InvedgeError as exc:
        raise CheckpointError(
            exc.message, "Move it out of the run folder (resuming rewrites it), then resume again"
        ) from exc
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        what = f"format {info.get('format')!r}" if isinstance(info, dict) else "not a JSON object"
        raise CheckpointError(
            f"{path} is not an 'invedge train' run.json ({what})",
            "Move it out of the run folder (resuming rewrites it), then resume again",
        )
    return info


def check_same_data(config: dict[str, Any], data_fingerprint: str, run_dir: Path) -> None:
    """A resumed run trains on the images it started with (the checkpoint stores their fingerprint)."""
    stored = config.get("data_fingerprint")
    if stored and stored != data_fingerprint:
        raise DataError(
            f"the training data of {run_dir} changed since the run started (fingerprint differs)",
            "Resume with the same data, or start a new run with --out NEW_DIR",
        )


# --- the folder rank 0 writes --------------------------------------------------------------------


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """The run folder as rank 0 writes it: RUN itself, or (an --overwrite) `.RUN.staging` until the
    new run's first epoch is complete and `swap_in` puts it in RUN's place.

    `info` is run.json's content and `metrics` metrics.jsonl's records; the checkpoint itself is
    written by checkpoint.py's `Checkpointer` into `target`.
    """

    def __init__(self, path: Path, info: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        self.path = path
        self.target = path  # where the files go now
        self.info = info
        self.metrics = metrics

    @classmethod
    def create(
        cls, run_dir: Path, info: dict[str, Any], metrics: list[dict[str, Any]], replacing: bool
    ) -> RunFolder:
        """Create the folder this run writes to (the staging folder when replacing a run), and
        prove it writable."""
        folder = cls(run_dir, info, metrics)
        if replacing:
            folder.target = staging_path(run_dir)
        try:
            folder.target.mkdir(parents=True, exist_ok=not replacing)
        except OSError as exc:
            raise InvedgeError(
                f"cannot create {folder.target}: {exc.strerror}", "Choose a writable --out folder"
            ) from exc
        check_writable(folder.target, "Choose a writable --out folder")
        return folder

    @property
    def staged(self) -> bool:
        """Whether the run is still being built beside the old one (RUN untouched)."""
        return self.target != self.path

    @contextlib.contextmanager
    def write_errors(self) -> Iterator[None]:
        """A failed write (disk full, permissions): one line saying what is intact and what to run."""
        try:
            yield
        except InvedgeError as exc:
            if self.staged:
                hint = (
                    f"Nothing was replaced: {self.path} still holds the previous run. Fix this and run again"
                )
            else:
                hint = (
                    f"The last checkpoint in {self.path} is intact: fix this, then continue with "
                    f"'invedge train --resume {self.path}'"
                )
            worded = copy.copy(exc)
            worded.hint = hint
            raise worded from exc

    def write_info(self, epochs_done: int, step: int, status: str, partial_skipped: int = 0) -> None:
        """run.json: where the run stands (written after each checkpoint)."""
        self.info.update(epoch=epochs_done, step=step, status=status, updated=now())
        self.info["skipped_images"] = sum(m.get("skipped_images", 0) for m in self.metrics) + partial_skipped
        atomic_write_json(self.target / RUN_JSON, self.info)

    def mark_failed(self, epochs_done: int, step: int, reason: str) -> None:
        """run.json of a run that stopped on an error its checkpoint does not carry (a diverged
        loss): status 'failed' and why, at the kept checkpoint's epoch and step. Best effort: the
        error itself is what the user must see, so a failed write of this note stays quiet."""
        self.info.update(epoch=epochs_done, step=step, status="failed", error=reason, updated=now())
        with contextlib.suppress(InvedgeError, OSError):
            atomic_write_json(self.target / RUN_JSON, self.info)

    def write_metrics(self) -> None:
        """metrics.jsonl, one record per epoch; written before the epoch's checkpoint, so a kill
        between the two leaves a line the resume drops (`read_metrics`)."""
        with self.write_errors():
            atomic_write_text(self.target / METRICS_NAME, "".join(json.dumps(m) + "\n" for m in self.metrics))

    def write_curves(self, title: str) -> None:
        from .plots import plot_curves

        with self.write_errors():
            plot_curves(self.metrics, self.target / CURVES_NAME, title)

    def swap_in(self) -> None:
        """The staged run's first epoch is complete: it replaces the old run in RUN."""
        if self.staged:
            swap_in(self.target, self.path)
            self.target = self.path


def run_info(
    run_config: dict[str, Any],
    data: dict[str, Any],
    environment: dict[str, Any],
    started: str | None = None,
) -> dict[str, Any]:
    """run.json of a run about to start: its settings, preprocessing, data, machine and versions."""
    import numpy as np
    import torch
    import torchvision

    from invspread_edge_runtime.version import __version__

    return {
        "format": RUN_FORMAT,
        "status": "running",
        "epoch": 0,
        "step": 0,
        "config": run_config,
        "preprocessing": {
            "image_size": run_config["image_size"],
            "mean": run_config["mean"],
            "std": run_config["std"],
            "resize": "shorter_side_center_crop",
            "interpolation": "bilinear",
            "channels": "RGB",
        },
        "data": data,
        "environment": environment,
        "versions": {
            "invspread_edge": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "files": {"checkpoint": CHECKPOINT_NAME, "metrics": METRICS_NAME, "curves": CURVES_NAME},
        "started": started or now(),
        "updated": now(),
        "skipped_images": 0,
    }


# --- the swap ------------------------------------------------------------------------------------


def swap_in(staging: Path, run_dir: Path) -> None:
    """Replace the run in `run_dir` by the complete run in `staging` (see the module's docstring)."""
    hooks.reached("run-swap")  # the staged run complete, the old one not yet replaced
    try:
        _carry_user_files(run_dir, staging)
        with contextlib.suppress(OSError):
            shutil.copymode(run_dir, staging)
        if _exchange(staging, run_dir):
            fsync_dir(run_dir.absolute().parent)
            hooks.reached("run-swapped")  # the new run in place, the old one not yet removed
            shutil.rmtree(staging)  # now the old run
        else:
            replace_folder(staging, run_dir, replaced_path(run_dir))
    except OSError as exc:
        raise os_error(exc, run_dir) from exc


def _carry_user_files(run_dir: Path, staging: Path) -> None:
    """Hard-link (or copy) into the new run what the user keeps in RUN beside training's files."""
    for entry in run_dir.iterdir():
        dest = staging / entry.name
        if entry.name in RUN_FILES or dest.exists() or dest.is_symlink():
            continue
        if entry.name.startswith(tuple(f".{n}." for n in RUN_FILES)) and entry.name.endswith(".tmp"):
            continue  # our own cut-short temporary files
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest)
        elif entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))
