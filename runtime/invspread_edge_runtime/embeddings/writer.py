"""Writing an embeddings folder (layout.py): streamed part by part, resumable, swapped in whole.

`EmbeddingWriter` keeps at most one part (`part_size` rows) in memory and writes each part
atomically under `parts/`; a killed run resumes from the parts already written (and retries the
images that could not be read); `finish()` joins them into `embeddings.npy` with ordinary buffered
writes (a full disk is an error naming the file, not a SIGBUS), so folders larger than memory work.

Replacing (`overwrite`) or extending (`retry_failed`) a folder never touches it until the new one
is complete: the new folder is built beside it in the hidden sibling `.NAME.staging`, then swapped
in (old → `.NAME.old`, staging → NAME, old deleted). A crash at any moment leaves the old or the
new complete folder; the next run (under the lock) finishes or undoes a half-done swap (`recover`)
and removes the temporary files of dead writers. The caller holds `locks.exclusive_lock(out)` (as
`corpus.embed_to_folder` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbeddingsError
from ..files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    leftovers,
    pause_for_test,
    read_json,
    remove_leftovers,
    replace_folder,
    sha256_bytes,
    write_npy,
    write_npy_header,
    write_rows,
)
from .layout import (
    DEFAULT_DTYPE,
    DTYPES,
    FORMAT,
    IDS,
    MANIFEST,
    OURS,
    PART_SIZE,
    PARTS,
    VECTORS,
    aside_path,
    staging_path,
)
from .reader import EmbeddingSet, failed_count, load_embeddings

STATE = "state.json"
STATE_KEYS = ("space_id", "model_sha256", "root", "dtype", "mode", "base")
LABELS = {  # how a state key is named in messages
    "space_id": "embedding space",
    "model_sha256": "model file (sha256)",
    "root": "images folder (root)",
    "dtype": "dtype",
    "mode": "kind of run",
    "base": "base folder",
}


class EmbeddingWriter:
    """Write embeddings to a folder part by part; resumable; `finish()` makes the final files.

    `space`: {"space_id", "checkpoint_sha256", "embedding_dim"}; `model`: facts about the model
    file (at least "sha256"). A run resumes only with the same model file, root and dtype.
    `overwrite`: build a new folder beside a finished one and swap at the end. `retry_failed`:
    keep a finished folder's embeddings and add what is missing (images that failed before).
    The caller holds the lock of `out` (see the module docstring).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        space: dict[str, Any],
        model: dict[str, Any],
        root: str | os.PathLike[str],
        dtype: str = DEFAULT_DTYPE,
        part_size: int = PART_SIZE,
        overwrite: bool = False,
        retry_failed: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"Invalid dtype {dtype!r}. Only {', '.join(DTYPES)} are supported.")
        self.out = Path(out)
        self.space, self.model, self.dtype = dict(space), dict(model), dtype
        self.root = str(Path(root).absolute())
        self.dim = int(space["embedding_dim"])
        self.part_size = part_size
        self._state: dict[str, Any] = {
            "format": FORMAT,
            "space_id": self.space["space_id"],
            "model_sha256": self.model["sha256"],
            "root": self.root,
            "dtype": dtype,
            "mode": "direct",
            "base": None,
        }
        self.work = self.out  # where the parts and final files are written (or the staging folder)
        self.base: EmbeddingSet | None = None  # retry_failed: the finished folder being extended
        self._prepare(overwrite, retry_failed)
        self.done_ids, self.failures, self._parts, self.resumed = self._scan_parts()
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._new_failures: list[list[str]] = []

    @property
    def staged(self) -> bool:
        """True when the result is built beside `out` and swapped in by `finish()`."""
        return self.work != self.out

    @property
    def count(self) -> int:
        """Images embedded so far, resumed parts included."""
        return sum(n for _, n in self._parts) + sum(len(v) for v in self._vectors)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        self._ids.extend(ids)
        self._vectors.append(vectors.astype(self.dtype, copy=False))
        if len(self._ids) >= self.part_size:
            self.flush()

    def add_failure(self, item_id: str, reason: str) -> None:
        self._new_failures.append([item_id, reason])
        if len(self._new_failures) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one part (atomically: the part's JSON is its commit marker)."""
        if not self._ids and not self._new_failures:
            return
        number = len(self._parts)
        parts = self.work / PARTS
        vectors = (
            np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), dtype=self.dtype)
        )
        rows = min(len(vectors), len(self._ids))  # an interrupt between the two appends of add()
        vectors, self._ids = vectors[:rows], self._ids[:rows]
        with atomic_path(parts / f"part-{number:06d}.npy") as tmp, open(tmp, "wb") as fh:
            write_npy(fh, vectors)
        atomic_write_json(parts / f"part-{number:06d}.json", {"ids": self._ids, "failed": self._new_failures})
        self._parts.append((number, len(self._ids)))
        self.failures.extend(self._new_failures)
        self.done_ids.update(self._ids)
        self._ids, self._vectors, self._new_failures = [], [], []

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Join the parts into the final files, write the manifest last, remove the parts.

        A staged folder (overwrite, retry_failed) is then swapped in place of `out`.
        """
        self.flush()
        parts = self.work / PARTS
        ids: list[str] = []
        failures: dict[str, str] = {}
        for number, _ in self._parts:
            record = _read_part_record(parts / f"part-{number:06d}.json")
            ids.extend(record["ids"])
            failures.update((item, reason) for item, reason in record["failed"])
        embedded = set(ids)
        failed = [[item, reason] for item, reason in failures.items() if item not in embedded]
        total = len(ids)
        if total == 0:  # nothing worth keeping: a rerun tries every image again anyway
            shutil.rmtree(parts, ignore_errors=True)
            if self.staged:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    self.work.rmdir()  # only if empty: a folder this run made
            first = f"; first: {failed[0][1]}" if failed else ""
            raise EmbeddingsError(
                f"no image could be embedded ({len(failed)} unreadable{first})",
                "Fix or remove the unreadable images, then run the same command again",
            )
        digest = hashlib.sha256()
        with atomic_path(self.work / VECTORS) as tmp, open(tmp, "wb") as fh:
            write_npy_header(fh, self.dtype, (total, self.dim), digest)
            for position, (number, count) in enumerate(self._parts):
                if count:
                    part = np.load(parts / f"part-{number:06d}.npy", mmap_mode="r", allow_pickle=False)
                    write_rows(fh, np.asarray(part, dtype=self.dtype), digest)
                if position == 0:
                    fh.flush()
                    pause_for_test("embed-join")  # a kill here: a half-written temporary file
        ids_bytes = (json.dumps(ids) + "\n").encode("utf-8")
        atomic_write_bytes(self.work / IDS, ids_bytes)
        manifest = {
            "format": FORMAT,
            "count": total,
            "dim": self.dim,
            "dtype": self.dtype,
            "space": self.space,
            "model": self.model,
            "root": self.root,
            "failed_count": len(failed),
            "failed": [{"id": i, "reason": r} for i, r in failed],
            "embeddings_sha256": digest.hexdigest(),
            "ids_sha256": sha256_bytes(ids_bytes),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        atomic_write_json(self.work / MANIFEST, manifest)  # the folder is complete from here
        shutil.rmtree(parts, ignore_errors=True)
        if self.staged:
            replace_folder(self.work, self.out, aside_path(self.out), pause_at="embed-swap")
        self.failures = failed
        return manifest

    # --- resume, overwrite, retry ---------------------------------------------------------------

    def _prepare(self, overwrite: bool, retry_failed: bool) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise EmbeddingsError(f"{out} exists and is not a folder", "Choose another --out")
        recover(out)
        if out.is_dir():
            remove_leftovers(out, OURS)  # temporary files of a writer that died (we hold the lock)
        present = {p.name for p in out.iterdir()} if out.is_dir() else set()
        if present - OURS:
            raise EmbeddingsError(
                f"{out} already holds other files; refusing to write embeddings into it",
                "Choose a new or empty --out folder",
            )
        finished = MANIFEST in present
        if finished and PARTS in present:  # a crash after the manifest, before the parts went
            shutil.rmtree(out / PARTS, ignore_errors=True)
        staging = staging_path(out)
        if retry_failed and finished:
            self.base = load_embeddings(out, verify=False)
            self._check_base(self.base)
            self._state |= {"mode": "retry", "base": self.base.manifest.get("embeddings_sha256")}
        elif finished and not overwrite:
            failed = int(failed_count(out))
            retry = f", or --retry-failed to retry its {failed} unreadable images" if failed else ""
            raise EmbeddingsError(
                f"{out} already holds finished embeddings",
                f"Pass --overwrite to embed again (the old ones are replaced only once the new ones exist){retry}",
            )
        elif overwrite and present:
            self._state["mode"] = "overwrite"
        if self._state["mode"] == "direct":
            if staging.exists() and not present:  # an orphan: nothing left for it to replace
                shutil.rmtree(staging, ignore_errors=True)
            self._open_state(out, discard_mismatch=False)
            return
        self.work = staging
        self._open_state(staging, discard_mismatch=True)
        if self.base is not None and not (staging / PARTS / "part-000000.json").is_file():
            self._seed_from_base(self.base)

    def _open_state(self, work: Path, discard_mismatch: bool) -> None:
        """Resume the unfinished run in `work` if it is the same run; else refuse or start over."""
        parts = work / PARTS
        if work.is_dir():
            remove_leftovers(work, OURS)  # temporary files of a writer that died (we hold the lock)
        if parts.is_dir():
            remove_leftovers(parts)
        state_file = parts / STATE
        if discard_mismatch and work.is_dir() and (work / MANIFEST).is_file():
            shutil.rmtree(work)  # a finished staging folder that recover() did not swap in: stale
        if state_file.is_file() or any(parts.glob("part-*")):
            mismatch = self._state_mismatch(state_file)
            if mismatch is None:
                return
            if discard_mismatch:
                shutil.rmtree(work)
            else:
                raise EmbeddingsError(
                    f"{self.out} holds an unfinished run with {mismatch}",
                    "Pass --overwrite to start over, or resume with the same model, images and dtype",
                )
        atomic_write_json(state_file, self._state)

    def _state_mismatch(self, state_file: Path) -> str | None:
        """None when the unfinished run in `state_file`'s folder is this run; else what differs."""
        try:
            state = read_json(state_file, "resume state")
        except Exception:  # missing or damaged: its parts cannot be trusted
            return "a missing or damaged resume state (parts/state.json)"
        if not isinstance(state, dict):
            return "a damaged resume state (parts/state.json)"
        state = {"mode": "direct", "base": None} | state
        for key in STATE_KEYS:
            if state.get(key) != self._state[key]:
                return f"another {LABELS[key]} ({state.get(key)!r}, now {self._state[key]!r})"
        return None

    def _check_base(self, base: EmbeddingSet) -> None:
        """--retry-failed extends a folder only with the same model, root and dtype."""
        facts = {
            "space_id": base.space_id,
            "model_sha256": base.manifest.get("model", {}).get("sha256"),
            "root": base.manifest.get("root"),
            "dtype": base.manifest.get("dtype"),
        }
        for key, value in facts.items():
            if value != self._state[key]:
                raise EmbeddingsError(
                    f"{self.out} was embedded with another {LABELS[key]} "
                    f"({value!r}, now {self._state[key]!r}); --retry-failed only adds to it with the same one",
                    "Pass the same model, images and --dtype, or --overwrite to embed everything again",
                )

    def _seed_from_base(self, base: EmbeddingSet) -> None:
        """Part 0 of a retry: the finished folder's vectors (hard-linked, not copied) and failures."""
        parts = self.work / PARTS
        source = base.path / VECTORS
        with atomic_path(parts / "part-000000.npy") as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)  # the part is never written in place: the old file stays intact
            except OSError:
                shutil.copyfile(source, tmp)
        failed = [[f.get("id"), f.get("reason", "")] for f in base.failed if isinstance(f.get("id"), str)]
        atomic_write_json(parts / "part-000000.json", {"ids": base.ids, "failed": failed})

    def _scan_parts(self) -> tuple[set[str], list[list[str]], list[tuple[int, int]], bool]:
        """The parts already written: embedded ids (images that failed are retried), failures."""
        done: set[str] = set()
        failures: list[list[str]] = []
        parts: list[tuple[int, int]] = []
        folder = self.work / PARTS
        number = 0
        while (folder / f"part-{number:06d}.json").is_file() and (
            folder / f"part-{number:06d}.npy"
        ).is_file():
            try:
                record = _read_part_record(folder / f"part-{number:06d}.json")
                header = np.load(folder / f"part-{number:06d}.npy", mmap_mode="r", allow_pickle=False)
                if header.shape != (len(record["ids"]), self.dim):
                    break
            except (OSError, ValueError, EmbeddingsError):
                break  # a damaged tail part: redo from here
            done.update(record["ids"])
            failures.extend(record["failed"])
            parts.append((number, len(record["ids"])))
            number += 1
        # parts past a damaged one are not trusted: remove them, or a later flush would collide
        for stale in folder.glob("part-*") if folder.is_dir() else []:
            with contextlib.suppress(ValueError, OSError):
                if int(stale.name[5:11]) >= number:
                    stale.unlink()
        return done, failures, parts, bool(parts)


def _read_part_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingsError(f"{path} is damaged", "Run the same command again") from exc
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("ids"), list)
        and all(isinstance(i, str) for i in record["ids"])
        and isinstance(record.get("failed"), list)
        and all(isinstance(f, list) and len(f) == 2 for f in record["failed"])
    )
    if not ok:
        raise EmbeddingsError(f"{path} is damaged", "Run the same command again")
    return record


def recover(out: str | os.PathLike[str]) -> str | None:
    """Finish or undo a swap that a crash interrupted (call under the lock); say what was done.

    - old aside and `out` complete: the swap was done; delete the old copy;
    - old aside, no `out`: move the new complete folder in if there is one, else the old one back;
    - a complete staging folder and `out` still in place: the new result exists; swap it in.
    """
    out = Path(out)
    aside, staging = aside_path(out), staging_path(out)
    staged_done = (staging / MANIFEST).is_file()  # the manifest is written last: complete
    if staged_done:
        shutil.rmtree(staging / PARTS, ignore_errors=True)
    if aside.exists():
        if (out / MANIFEST).is_file():
            shutil.rmtree(aside, ignore_errors=True)
            return "removed the old folder of a finished swap"
        if not out.exists():
            if staged_done:
                os.rename(staging, out)
                shutil.rmtree(aside, ignore_errors=True)
                fsync_dir(out.absolute().parent)
                return "completed an interrupted swap"
            os.rename(aside, out)
            fsync_dir(out.absolute().parent)
            return "restored the previous folder"
        return None
    if staged_done and out.is_dir():
        replace_folder(staging, out, aside_path(out), pause_at="embed-swap")
        return "completed an interrupted swap"
    return None


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
    if present - OURS:
        raise EmbeddingsError(
            f"{out} already holds other files; refusing to write embeddings into it",
            "Choose a new or empty --out folder",
        )
    if MANIFEST in present and not (overwrite or retry_failed):
        failed = failed_count(out)
        retry = f", or --retry-failed to retry its {failed} unreadable images" if failed else ""
        raise EmbeddingsError(
            f"{out} already holds finished embeddings",
            f"Pass --overwrite to embed again (the old ones are replaced only once the new ones exist){retry}",
        )
