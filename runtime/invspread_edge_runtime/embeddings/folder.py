"""The output folder as a whole: where a run may write, the finishing step, and a killed swap's recovery.

Replacing (`overwrite`) or extending (`retry_failed`) a folder never touches it until the new one
is complete: the new folder is built beside it in the hidden sibling `.NAME.staging`, then swapped
in (old → `.NAME.old`, staging → NAME, old deleted). The manifest is written last, so a folder
that has one is complete. A crash at any moment leaves the old or the new complete folder; the
next run (under the lock) finishes or undoes a half-done swap (`recover`) and removes the
temporary files of dead writers. Callers hold `locks.exclusive_lock(out)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import EmbeddingsError
from ..files import atomic_write_json, leftovers, recover_swap, remove_leftovers, replace_folder, unremovable
from .layout import MANIFEST, OURS, PARTS, aside_path, staging_path
from .parts import differs
from .reader import EmbeddingSet, failed_count, load_embeddings


def prepare(
    out: Path, state: dict[str, Any], overwrite: bool, retry_failed: bool
) -> tuple[Path, EmbeddingSet | None]:
    """Where this run writes, after the refusals: (`out` itself or its staging folder, the base).

    The base is the finished folder that `retry_failed` extends (else None). Sets the run's
    "mode" ("direct", "overwrite", "retry") and "base" in `state`.
    """
    if out.exists() and not out.is_dir():
        raise EmbeddingsError(f"{out} exists and is not a folder", "Choose another --out")
    recover(out)
    if out.is_dir():
        remove_leftovers(out, OURS)  # temporary files of a writer that died (we hold the lock)
    present = {p.name for p in out.iterdir()} if out.is_dir() else set()
    _refuse_foreign(out, present)
    finished = MANIFEST in present
    if finished and PARTS in present:  # a crash after the manifest, before the parts went
        shutil.rmtree(out / PARTS, ignore_errors=True)
    if finished and (overwrite or retry_failed):
        _refuse_unremovable(out)
    if retry_failed and finished:
        base = load_embeddings(out, verify=False)
        _check_base(out, base, state)
        state |= {"mode": "retry", "base": base.manifest.get("embeddings_sha256")}
        return staging_path(out), base
    if finished and not overwrite:
        _refuse_finished(out)
    if overwrite and present:
        state["mode"] = "overwrite"
        return staging_path(out), None
    staging = staging_path(out)
    if staging.exists() and not present:  # an orphan: nothing left for it to replace
        shutil.rmtree(staging, ignore_errors=True)
    return out, None


def check_output(out: str | os.PathLike[str], overwrite: bool = False, retry_failed: bool = False) -> None:
    """The cheap refusals of `EmbeddingWriter`, to make before the model is opened (under the lock).

    `out` must be a folder or nothing, hold only our files, and hold no finished embeddings
    unless `overwrite` or `retry_failed`. The writer checks all of it again.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmbeddingsError(f"{out} exists and is not a folder", "Choose another --out")
    if not out.is_dir():
        return
    leftover = {p.name for p in leftovers(out, OURS)}
    present = {p.name for p in out.iterdir()} - leftover
    _refuse_foreign(out, present)
    if MANIFEST in present and not (overwrite or retry_failed):
        _refuse_finished(out)
    if MANIFEST in present:
        _refuse_unremovable(out)


def finish(work: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last (the folder is complete from then on), drop the parts, and swap a
    staged `work` in place of `out`."""
    atomic_write_json(work / MANIFEST, manifest)
    shutil.rmtree(work / PARTS, ignore_errors=True)
    if work != out:
        replace_folder(work, out, aside_path(out), hook_point="embed-swap")


def recover(out: str | os.PathLike[str]) -> str | None:
    """Finish or undo a swap that a crash interrupted (call under the lock); say what was done.

    The old folder aside: `files.recover_swap` (done: delete it; cut short: the new complete
    folder in, else the old one back). No swap begun but a complete staging folder beside `out`:
    the new result exists; swap it in.
    """
    out = Path(out)
    aside, staging = aside_path(out), staging_path(out)
    staged_done = _complete(staging)
    if staged_done:
        shutil.rmtree(staging / PARTS, ignore_errors=True)
    done = recover_swap(out, aside, staging, _complete)
    if done is not None or aside.exists():
        return done
    if staged_done and out.is_dir():
        replace_folder(staging, out, aside, hook_point="embed-swap")
        return "completed an interrupted swap"
    return None


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()  # the manifest is written last


def _refuse_foreign(out: Path, present: set[str]) -> None:
    if present - OURS:
        raise EmbeddingsError(
            f"{out} already holds other files; refusing to write embeddings into it",
            "Choose a new or empty --out folder",
        )


def _refuse_unremovable(out: Path) -> None:
    """The old folder is removed once the new one is swapped in: it must be removable."""
    if (blocked := unremovable(out)) is not None:
        raise EmbeddingsError(
            f"cannot replace {out}: {blocked} is not writable, so the old embeddings could not be removed",
            f"Make it writable (chmod -R u+w {out}) or choose another --out",
        )


def _refuse_finished(out: Path) -> None:
    failed = int(failed_count(out))
    retry = f", or --retry-failed to retry its {failed} unreadable images" if failed else ""
    raise EmbeddingsError(
        f"{out} already holds finished embeddings",
        f"Pass --overwrite to embed again (the old ones are replaced only once the new ones exist){retry}",
    )


def _check_base(out: Path, base: EmbeddingSet, state: dict[str, Any]) -> None:
    """--retry-failed (or a live source's append) extends a folder only with the same model, root,
    dtype and, where both have video frames, the same frames kept (`state["sampling"]`:
    `Sampling.selection()`; the manifest records every sampling field)."""
    facts = {
        "space_id": base.space_id,
        "model_sha256": base.manifest.get("model", {}).get("sha256"),
        "root": base.manifest.get("root"),
        "dtype": base.manifest.get("dtype"),
    }
    for key, value in facts.items():
        if value != state[key]:
            raise EmbeddingsError(
                f"{out} was embedded with {differs(key, value, state[key])}; --retry-failed only adds "
                "to it with the same one",
                "Pass the same model, images and --dtype, or --overwrite to embed everything again",
            )
    recorded, now = base.manifest.get("sampling"), state.get("sampling")
    if isinstance(recorded, dict) and now is not None:
        before = {key: recorded.get(key) for key in now}  # the manifest records every field
        if before != now:
            raise EmbeddingsError(
                f"{out} holds frames taken with {differs('sampling', before, now)}; adding to it "
                "would mix the two",
                "Pass the same --every/--fps/--start/--end, or --overwrite to embed everything again",
            )
