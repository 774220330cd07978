"""Writing an embeddings folder (layout.py): streamed part by part, resumable, swapped in whole.

`EmbeddingWriter` keeps at most one part (`part_size` rows) in memory; each part goes to disk
through `parts.PartStore` (which also claims, lists and merges the parts); a killed run resumes
from the parts already written (and retries the images that could not be read). `finish()` merges
them into the final files and hands over to `folder.finish`, which writes the manifest and swaps a
staged folder in (`folder.py`: where a run may write, and the recovery of a killed swap). The
caller holds `locks.exclusive_lock(out)` (as `corpus.embed_to_folder` does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..errors import DataError
from . import folder
from .layout import DEFAULT_DTYPE, DTYPES, FORMAT, PART_SIZE
from .parts import PartStore


class EmbeddingWriter:
    """Write embeddings to a folder part by part; resumable; `finish()` makes the final files.

    `space`: {"space_id", "checkpoint_sha256", "embedding_dim"}; `model`: facts about the model
    file (at least "sha256"). A run resumes only with the same model file, root and dtype.
    `overwrite`: build a new folder beside a finished one and swap at the end. `retry_failed`:
    keep a finished folder's embeddings and add what is missing (images that failed before).
    `sampling`: which frames a run with video sources keeps of them (`Sampling.selection()`,
    None for images alone): a run resumes, or extends a finished folder, only with the same one
    (another --max-frames or --duration resumes).
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
        sampling: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"Invalid dtype {dtype!r}. Only {', '.join(DTYPES)} are supported.")
        self.out = Path(out)
        self.space, self.model, self.dtype = dict(space), dict(model), dtype
        self.root = str(Path(root).absolute())
        self.dim = int(space["embedding_dim"])
        self.part_size = part_size
        state: dict[str, Any] = {
            "format": FORMAT,
            "space_id": self.space["space_id"],
            "model_sha256": self.model["sha256"],
            "root": self.root,
            "dtype": dtype,
            "mode": "direct",
            "base": None,
        } | ({"sampling": sampling} if sampling is not None else {})  # images alone: no such key
        # where the parts and final files are written (`out`, or its staging folder), and the
        # finished folder that retry_failed extends
        self.work, self.base = folder.prepare(self.out, state, overwrite, retry_failed)
        self._store = PartStore(self.work, self.dim, dtype)
        self._store.claim(state, self.out, discard_mismatch=self.staged)
        if self.base is not None:
            self._store.seed(self.base)
        # finished: the video files read to their end (name → record), not opened again
        self.done_ids, self.failures, self.finished = self._store.scan()
        self.resumed = bool(self._store.parts)
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._new_failures: list[list[str]] = []
        self._frames: dict[str, dict[str, Any]] = {}
        self._finished: dict[str, dict[str, Any]] = {}

    @property
    def staged(self) -> bool:
        """True when the result is built beside `out` and swapped in by `finish()`."""
        return self.work != self.out

    @property
    def count(self) -> int:
        """Images embedded so far, resumed parts included."""
        return self._store.rows + sum(len(v) for v in self._vectors)

    def add(
        self, ids: list[str], vectors: np.ndarray, frames: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Buffer `vectors` for `ids`; `frames`: what those ids that are video frames are
        (id → source, index, time, live: sources.frame.frame_info)."""
        vectors = np.asarray(vectors)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        if frames:
            self._frames.update(frames)
        self._ids.extend(ids)
        self._vectors.append(vectors.astype(self.dtype, copy=False))
        if len(self._ids) >= self.part_size:
            self.flush()

    def add_failure(self, item_id: str, reason: str) -> None:
        self._new_failures.append([item_id, reason])
        if len(self._new_failures) >= self.part_size:
            self.flush()

    def finish_source(self, name: str, record: dict[str, Any]) -> None:
        """The video file `name` was read to its end (`record`: its entry in the manifest's
        "sources"): written with the next part, so that a resumed run does not open it again."""
        self._finished[name] = record

    def flush(self) -> None:
        """Write what is buffered as one part (atomically: the part's JSON is its commit marker)."""
        if not self._ids and not self._new_failures and not self._finished:
            return
        vectors = (
            np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), dtype=self.dtype)
        )
        rows = min(len(vectors), len(self._ids))  # an interrupt between the two appends of add()
        vectors, self._ids = vectors[:rows], self._ids[:rows]
        frames = {item: self._frames[item] for item in self._ids if item in self._frames}
        self._store.write(self._ids, vectors, self._new_failures, frames, self._finished)
        self.failures.extend(self._new_failures)
        self.done_ids.update(self._ids)
        self.finished.update(self._finished)
        self._ids, self._vectors, self._new_failures, self._frames, self._finished = [], [], [], {}, {}

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge the parts into the final files, write the manifest last, remove the parts.

        A staged folder (overwrite, retry_failed) is then swapped in place of `out`.
        """
        self.flush()
        ids, failed = self._store.records()
        if not ids:
            self._give_up(failed)
        embeddings_sha256, ids_sha256 = self._store.merge(ids)
        frames_sha256 = self._store.write_frames(self._store.frames())
        manifest = {
            "format": FORMAT,
            "count": len(ids),
            "dim": self.dim,
            "dtype": self.dtype,
            "space": self.space,
            "model": self.model,
            "root": self.root,
            "failed_count": len(failed),
            "failed": [{"id": i, "reason": r} for i, r in failed],
            "embeddings_sha256": embeddings_sha256,
            "ids_sha256": ids_sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"frames_sha256": frames_sha256} if frames_sha256 else {}),
            **(extra or {}),
        }
        folder.finish(self.work, self.out, manifest)
        self.failures = failed
        return manifest

    def discard(self) -> None:
        """Drop this run's unfinished work when it started it (not a resume): what a model that
        gives NaN wrote is worth nothing (a rerun with it fails the same way; another model cannot
        resume it)."""
        if not self.resumed:
            self._remove_work()

    def _remove_work(self) -> None:
        self._store.remove()
        if self.staged:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self.work.rmdir()  # only if empty: a folder this run made

    def _give_up(self, failed: list[list[str]]) -> NoReturn:
        """No image could be embedded: nothing worth keeping (a rerun tries every image again anyway)."""
        self._remove_work()
        first = f"; first: {failed[0][1]}" if failed else ""
        raise DataError(
            f"no image could be embedded ({len(failed)} unreadable{first})",
            "Fix or remove the unreadable images, then run the same command again",
        )
