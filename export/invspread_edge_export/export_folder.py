"""The export folder's lifecycle: one lock, one checkpoint, no leftovers.

    check_writable(out)                                   # before any work
    with export_lock(out):
        earlier = claim(out, meta.checkpoint_sha256, overwrite=False, log=log)
        with staging_folder(out) as stage:
            report = ...                                  # every artifact written and checked in `stage`
            move_into_place(stage, out, report, earlier, meta.checkpoint_sha256, log)
        report.write()                                    # last: it names the set that belongs together

An export is written into a hidden staging folder inside the export folder, under the folder's
exclusive lock, and moved into place only once every artifact passed its checks; then the files of
an earlier export that do not belong with this one are removed. A failed export leaves the folder
as it was; a folder holding another checkpoint's export is refused unless asked to overwrite it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.files import (
    PROBE_PREFIX,
    default_aside,
    os_error,
    probe_write,
    read_json,
    recover_swap,
    remove_leftovers,
    replace_folder,
    sha256_file,
)
from invspread_edge_runtime.locks import exclusive_lock
from invspread_edge_runtime.metadata import ARTIFACT_FILES, read_model_meta
from invspread_edge_runtime.tensorrt.cache import read_sidecar, sidecar_path
from invspread_edge_runtime.verify.probes import MANIFEST, PROBE_DIR

from .report import REPORT_NAME, ExportReport

CACHE_DIR = ".cache"  # the calibration ranges cache, kept across exports
STAGE_PREFIX = ".export-new-"  # the staging folder inside the export folder
CALIBRATION_RECORD = "calibration.json"

Log = Callable[[str], None]


# --- before the export: the folder may take it ----------------------------------------------------


def check_out_folder(out: Path, default: Path) -> None:
    """`out` is an export folder (new, empty or written by an export), never a run folder, an
    embeddings folder or a folder of images: the export's files (model.onnx, report.json, probe
    images) would mix with theirs, and `embed`/`train` on that folder would pick them up.
    `default`: the export folder the run would get, named in the error's hint."""
    from invspread_edge_runtime.preprocess import IMAGE_SUFFIXES

    if not out.is_dir():
        return
    hint = f"Leave --out out (the default is {default}) or choose a new folder"
    if (out / "checkpoint.safetensors").exists():
        raise InvedgeError(f"--out {out} is a run folder (it holds checkpoint.safetensors)", hint)
    if (out / "manifest.json").exists() or (out / "embeddings.npy").exists():
        raise InvedgeError(f"--out {out} is an embeddings folder (it holds manifest.json)", hint)
    for path in out.rglob("*"):
        inside = path.relative_to(out).parts
        if inside[0] == "probes" or any(part.startswith(".") for part in inside):
            continue  # an earlier export's probe set; staging folders and caches
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise InvedgeError(
                f"--out {out} holds images ({path.relative_to(out)}): the export's probe images and "
                "model files would mix with them",
                hint,
            )


def check_writable(out: Path) -> None:
    """Fail before any work when the output folder cannot be written (not after minutes of it)."""
    if out.exists() and not out.is_dir():
        raise InvedgeError(f"output path {out} exists and is not a folder", "Choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_write(out)
    except OSError as exc:
        raise InvedgeError(
            f"cannot write to {out}: {exc.strerror or exc}", "Choose a writable --out folder"
        ) from exc
    if not os.access(out, os.W_OK):
        raise InvedgeError(f"cannot write to {out}", "Choose a writable --out folder")


_HELD: set[Path] = set()  # export folders whose lock this process holds (export_lock is re-entrant)


@contextlib.contextmanager
def export_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the export folder's exclusive lock (invspread_edge_runtime/locks.py) for the block.

    Re-entrant within this process: `invedge export` holds it across `export_model` and the engine
    builds that follow, so no other writer gets in between. A second process waits, or gets
    LockedError naming the holder.
    """
    key = Path(out).absolute()
    if key in _HELD:
        yield
        return
    with exclusive_lock(key, "export folder"):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def claim(out: Path, checkpoint_sha256: str, *, overwrite: bool, log: Log) -> list[dict[str, Any]]:
    """Under the lock: refuse a folder holding another checkpoint's export (unless `overwrite`) and
    clear what killed exports left; returns the report entries of this checkpoint's earlier
    artifacts (see `earlier_artifacts`)."""
    previous = previous_export(out)
    others = {sha: names for sha, names in previous.items() if sha != checkpoint_sha256}
    if others and not overwrite:
        listed = "; ".join(f"checkpoint {sha[:12]}…: {', '.join(names)}" for sha, names in others.items())
        raise InvedgeError(
            f"{out} holds an export of another checkpoint ({listed})",
            "Pass --overwrite to replace it (the old files go only once the new export has passed "
            "its checks), or choose another --out",
        )
    _clear_leftovers(out)  # before any work: a leftover that cannot be cleared is named now
    if previous:
        log(f"replacing the earlier export in {out} once the new one has passed its checks")
    return earlier_artifacts(out, checkpoint_sha256)


def previous_export(out: str | os.PathLike[str]) -> dict[str, list[str]]:
    """checkpoint sha256 → names of the readable artifacts of ours already in `out`."""
    found: dict[str, list[str]] = {}
    for onnx in sorted(Path(out).glob("*.onnx")):
        try:
            meta = read_model_meta(onnx)
        except InvedgeError:
            continue  # not ours, or damaged: remove_stale deals with damaged artifacts of ours
        found.setdefault(meta.checkpoint_sha256, []).append(onnx.name)
    return found


def earlier_artifacts(out: Path, checkpoint_sha256: str) -> list[dict[str, Any]]:
    """The entries of `out`'s report.json for artifacts of this checkpoint (an export that adds
    --fp16 to an --int8 one keeps those files, and its report must still describe them)."""
    try:
        previous = read_json(out / REPORT_NAME, "export report")
        if previous["metadata"]["invedge.checkpoint_sha256"] != checkpoint_sha256:
            return []
        return [
            dict(a) for a in previous["artifacts"] if isinstance(a, dict) and isinstance(a.get("file"), str)
        ]
    except (InvedgeError, KeyError, TypeError):
        return []  # no report, or a damaged one: nothing to carry over


def _clear_leftovers(out: Path) -> None:
    """What killed exports left (their staging folders, atomic writes' temporary files, the old
    probe set of a swap cut short): ours, and removed under the folder's lock, so that no leftover
    ever blocks or confuses a rerun; one that cannot be removed is named (InvedgeError)."""
    probes = out / PROBE_DIR
    recover_swap(probes, default_aside(probes), out / STAGE_PREFIX, lambda f: (f / MANIFEST).is_file())
    for entry in out.glob(f"{STAGE_PREFIX}*"):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    for entry in out.glob(f"{PROBE_PREFIX}*"):
        with contextlib.suppress(OSError):
            entry.unlink()
    remove_leftovers(out, [*ARTIFACT_FILES.values(), REPORT_NAME, CALIBRATION_RECORD])


# --- the export itself: staged, then moved into place ---------------------------------------------


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A hidden folder inside `out` for the export's files, removed when the block ends."""
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(
    stage: Path,
    out: Path,
    report: ExportReport,
    earlier: list[dict[str, Any]],
    checkpoint_sha256: str,
    log: Log,
) -> None:
    """Move the staged export into `out` (report.json stays behind: the caller writes it last),
    point `report` at it, remove what does not belong with it (`remove_stale`) and keep the
    earlier entries whose files are still there, unchanged (`report.earlier`)."""
    _move_into(stage, out, skip={REPORT_NAME})
    report.out_dir = out
    for artifact in report.artifacts:
        artifact.path = out / artifact.path.name
    for removed in remove_stale(out, checkpoint_sha256, report):
        log(f"removed {removed}")  # "NAME: why"
    report.earlier = _still_there(earlier, out, {a.path.name for a in report.artifacts})


def _move_into(stage: Path, out: Path, skip: set[str]) -> None:
    """Move every staged file and folder into `out`, replacing what is there (a folder is moved
    aside first and removed after). Hidden entries (caches, temporary files) stay behind."""
    try:
        for entry in sorted(stage.iterdir()):
            if entry.name in skip or entry.name.startswith("."):
                continue
            target = out / entry.name
            if entry.is_dir() and target.is_dir():
                replace_folder(entry, target)
            else:
                os.replace(entry, target)
    except OSError as exc:
        raise os_error(exc, out) from exc


def _still_there(entries: list[dict[str, Any]], out: Path, replaced: set[str]) -> list[dict[str, Any]]:
    """Earlier entries whose file is still in `out`, unchanged, and not replaced by this export."""
    kept = []
    for entry in entries:
        path = out / Path(entry["file"]).name
        if path.name not in replaced and path.is_file() and sha256_file(path) == entry.get("sha256"):
            kept.append(entry | {"from_earlier_export": True})
    return kept


def remove_stale(out: str | os.PathLike[str], checkpoint_sha256: str, report: ExportReport) -> list[str]:
    """Remove from `out` what does not belong with this export; returns "NAME: why" per file.

    - models of ours (our metadata) exported from another checkpoint;
    - a file with an artifact's name (model.onnx, ...) that cannot be read as one;
    - engines whose sidecar names another checkpoint, or an ONNX file this export replaced;
    - calibration.json, when no INT8 artifact is left for it to describe.
    Files that are not ours are left alone.
    """
    out = Path(out)
    new = {a.path.name: a.sha256 for a in report.artifacts}
    removed: list[str] = []

    def remove(path: Path, why: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(f"{path.name}: {why}")

    for onnx in sorted(out.glob("*.onnx")):
        if onnx.name not in new and (why := _stale_model(onnx, checkpoint_sha256)):
            remove(onnx, why)
    for engine in sorted(out.glob("*.engine")):
        if why := _stale_engine(engine, checkpoint_sha256, new):
            remove(engine, why)
            sidecar_path(engine).unlink(missing_ok=True)
    record = out / CALIBRATION_RECORD
    if report.calibration is None and record.exists() and not list(out.glob("model.int8*.onnx")):
        remove(record, "it described INT8 models that are gone")
    return removed


def _stale_model(onnx: Path, checkpoint_sha256: str) -> str | None:
    """Why an ONNX file this export did not write goes, or None when it stays."""
    try:
        meta = read_model_meta(onnx)
    except InvedgeError:
        return "damaged, and not part of this export" if onnx.name in ARTIFACT_FILES.values() else None
    if meta.checkpoint_sha256 != checkpoint_sha256:
        return f"exported from another checkpoint ({meta.checkpoint_sha256[:12]}…)"
    return None


def _stale_engine(engine: Path, checkpoint_sha256: str, new: dict[str, str]) -> str | None:
    """Why an engine goes (built from another checkpoint, or from an ONNX file this export
    replaced: `new` maps its files to their sha256), or None when it stays."""
    try:
        info = read_sidecar(engine)
    except InvedgeError:
        return None  # a damaged sidecar: the engine is refused when used, with its own message
    if info is None:
        return None
    built_from = Path(info.onnx_path).name
    if info.checkpoint_sha256 and info.checkpoint_sha256 != checkpoint_sha256:
        return "built from a model of another checkpoint"
    if built_from in new and info.key.onnx_sha256 != new[built_from]:
        return f"built from the {built_from} this export replaced"
    return None
