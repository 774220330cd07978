"""The parts of an unfinished run, on disk under `WORK/parts/`: claimed, written, listed, merged.

A run claims `parts/` with its state (`state.json`: model, images root, dtype, kind of run); a
later run resumes those parts only if its state is the same. Each part is `part-NNNNNN.npy` (the
vectors) and `part-NNNNNN.json` (their ids, the images that failed and, for video frames, what
each frame is: source, index, time; and the video files that ended at that part, each with its
record for the manifest, so that a resumed run does not open them again), the JSON written last as
the part's commit marker. `merge` joins the parts into `embeddings.npy` and `ids.json` with
ordinary buffered writes (a full disk is an error naming the file, not a SIGBUS), so folders
larger than memory work. The caller holds the output folder's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import hooks
from ..errors import EmbeddingsError
from ..files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    remove_leftovers,
    sha256_bytes,
    write_npy,
    write_npy_header,
    write_rows,
)
from ..sources.frame import split_frame_id
from ..sources.sampling import describe_change
from ..sources.spec import is_location
from .layout import FRAMES, IDS, MANIFEST, OURS, PARTS, VECTORS
from .reader import EmbeddingSet

STATE = "state.json"
STATE_KEYS = ("space_id", "model_sha256", "root", "dtype", "mode", "base", "sampling")
SERVED_MODEL = "triton:"  # leads a model's identity (`model_sha256`) when a Triton server runs it
LABELS = {  # how a state key is named in messages
    "space_id": "embedding space",
    "model_sha256": "model file (sha256)",
    "root": "images folder (root)",
    "dtype": "dtype",
    "mode": "kind of run",
    "base": "base folder",
    "sampling": "sampling",  # of video frames: a run with none (images only) has no such key
}


class PartStore:
    """The parts of the run writing in `work`; `parts` lists (number, rows) of those written."""

    def __init__(self, work: Path, dim: int, dtype: str) -> None:
        self.work, self.folder = work, work / PARTS
        self.dim, self.dtype = dim, dtype
        self.parts: list[tuple[int, int]] = []

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.parts)

    def _name(self, number: int, suffix: str) -> Path:
        return self.folder / f"part-{number:06d}.{suffix}"

    # --- claim ----------------------------------------------------------------------------------

    def claim(self, state: dict[str, Any], out: Path, discard_mismatch: bool) -> None:
        """Resume the unfinished run in `work` if it is the same run (`state`); else refuse or start over.

        `discard_mismatch`: `work` is a staging folder, ours to empty (else an error names `out`).
        """
        if self.work.is_dir():
            remove_leftovers(self.work, OURS)  # temporary files of a writer that died (we hold the lock)
        if self.folder.is_dir():
            remove_leftovers(self.folder)
        state_file = self.folder / STATE
        if discard_mismatch and self.work.is_dir() and (self.work / MANIFEST).is_file():
            shutil.rmtree(self.work)  # a finished staging folder that recover() did not swap in: stale
        if state_file.is_file() or any(self.folder.glob("part-*")):
            mismatch = _state_mismatch(state_file, state)
            if mismatch is None:
                return
            if discard_mismatch:
                shutil.rmtree(self.work)
            else:
                raise EmbeddingsError(
                    f"{out} holds an unfinished run with {mismatch}",
                    "Pass --overwrite to start over, or resume with the same model, images, dtype and "
                    "sampling flags",
                )
        atomic_write_json(state_file, state)

    def seed(self, base: EmbeddingSet) -> None:
        """Part 0 of a retry: the finished folder's vectors (hard-linked, not copied) and failures."""
        if self._name(0, "json").is_file():
            return
        source = base.path / VECTORS
        with atomic_path(self._name(0, "npy")) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)  # the part is never written in place: the old file stays intact
            except OSError:
                shutil.copyfile(source, tmp)
        failed = [[f.get("id"), f.get("reason", "")] for f in base.failed if isinstance(f.get("id"), str)]
        atomic_write_json(self._name(0, "json"), _record(base.ids, failed, base.frames, finished_files(base)))

    # --- list and write -------------------------------------------------------------------------

    def scan(self) -> tuple[set[str], list[list[str]], dict[str, dict[str, Any]]]:
        """The parts already written (into `parts`): embedded ids, failures (those images are
        retried), and the video files that ended (name → record: they are not opened again).

        Parts from a damaged one on are removed: they are redone, and a later write would collide.
        """
        done: set[str] = set()
        failures: list[list[str]] = []
        finished: dict[str, dict[str, Any]] = {}
        number = 0
        while self._name(number, "json").is_file() and self._name(number, "npy").is_file():
            try:
                record = _read_record(self._name(number, "json"))
                header = np.load(self._name(number, "npy"), mmap_mode="r", allow_pickle=False)
                if header.shape != (len(record["ids"]), self.dim):
                    break
            except (OSError, ValueError, EmbeddingsError):
                break  # a damaged tail part: redo from here
            done.update(record["ids"])
            failures.extend(record["failed"])
            finished.update(record.get("finished", {}))
            self.parts.append((number, len(record["ids"])))
            number += 1
        for stale in self.folder.glob("part-*") if self.folder.is_dir() else []:
            with contextlib.suppress(ValueError, OSError):
                if int(stale.name[5:11]) >= number:
                    stale.unlink()
        return done, failures, finished

    def write(
        self,
        ids: list[str],
        vectors: np.ndarray,
        failed: list[list[str]],
        frames: dict[str, dict[str, Any]] | None = None,
        finished: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """One more part, atomically: the vectors, then the JSON that commits them (`frames`: what
        those ids that are video frames are; `finished`: the video files that ended, name → record)."""
        number = len(self.parts)
        with atomic_path(self._name(number, "npy")) as tmp, open(tmp, "wb") as fh:
            write_npy(fh, vectors)
        atomic_write_json(self._name(number, "json"), _record(ids, failed, frames, finished))
        self.parts.append((number, len(ids)))

    # --- merge ----------------------------------------------------------------------------------

    def records(self) -> tuple[list[str], list[list[str]]]:
        """Every part's ids in order, and the images that failed and were not embedded later."""
        ids: list[str] = []
        failures: dict[str, str] = {}
        for number, _ in self.parts:
            record = _read_record(self._name(number, "json"))
            ids.extend(record["ids"])
            failures.update((item, reason) for item, reason in record["failed"])
        embedded = set(ids)
        # a video that failed to open is resolved once frames of it are embedded (`clip.mp4#t=…`)
        embedded.update(parts[0] for item in ids if (parts := split_frame_id(item)) is not None)
        return ids, [[item, reason] for item, reason in failures.items() if item not in embedded]

    def frames(self) -> dict[str, dict[str, Any]]:
        """What each video frame among the parts' ids is (id → source, index, time, live)."""
        frames: dict[str, dict[str, Any]] = {}
        for number, _ in self.parts:
            frames.update(_read_record(self._name(number, "json")).get("frames", {}))
        return frames

    def write_frames(self, frames: dict[str, dict[str, Any]]) -> str | None:
        """`frames.json` in `work` (none, and no stale one, when no item is a frame); its sha256."""
        if not frames:
            with contextlib.suppress(FileNotFoundError):
                (self.work / FRAMES).unlink()
            return None
        data = (json.dumps(frames) + "\n").encode("utf-8")
        atomic_write_bytes(self.work / FRAMES, data)
        return sha256_bytes(data)

    def merge(self, ids: list[str]) -> tuple[str, str]:
        """Join the parts into `embeddings.npy` and write `ids.json` in `work`; returns their sha256."""
        digest = hashlib.sha256()
        with atomic_path(self.work / VECTORS) as tmp, open(tmp, "wb") as fh:
            write_npy_header(fh, self.dtype, (len(ids), self.dim), digest)
            for position, (number, count) in enumerate(self.parts):
                if count:
                    part = np.load(self._name(number, "npy"), mmap_mode="r", allow_pickle=False)
                    write_rows(fh, np.asarray(part, dtype=self.dtype), digest)
                if position == 0:
                    fh.flush()
                    hooks.reached("embed-join")  # a kill here: a half-written temporary file
        ids_bytes = (json.dumps(ids) + "\n").encode("utf-8")
        atomic_write_bytes(self.work / IDS, ids_bytes)
        return digest.hexdigest(), sha256_bytes(ids_bytes)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _state_mismatch(state_file: Path, ours: dict[str, Any]) -> str | None:
    """None when the unfinished run in `state_file`'s folder is this run (`ours`); else what differs."""
    try:
        state = read_json(state_file, "resume state")
    except Exception:  # missing or damaged: its parts cannot be trusted
        return "a missing or damaged resume state (parts/state.json)"
    if not isinstance(state, dict):
        return "a damaged resume state (parts/state.json)"
    state = {"mode": "direct", "base": None} | state
    for key in STATE_KEYS:
        if state.get(key) != ours.get(key):
            return differs(key, state.get(key), ours.get(key))
    return None


def differs(key: str, before: Any, now: Any) -> str:
    """`another sampling (every 10, now every 5)`: how a resume or an extended folder's `key`
    (a `STATE_KEYS` one) differs from this run's, in messages."""
    if key == "sampling" and isinstance(before, dict) and isinstance(now, dict):
        return f"another {LABELS[key]} ({describe_change(before, now)})"
    if key == "sampling":  # video frames in one run, images alone in the other
        return f"another {LABELS[key]} ({_frames_or_not(before)}, now {_frames_or_not(now)})"
    if key == "model_sha256" and _served(before) and _served(now):
        return "another Triton model (its checkpoint, precision or name differs)"
    if key == "model_sha256" and (_served(before) or _served(now)):
        return f"another model ({_model_kind(before)}, now {_model_kind(now)})"
    return f"another {LABELS[key]} ({before!r}, now {now!r})"


def _served(identity: Any) -> bool:
    return str(identity).startswith(SERVED_MODEL)


def _model_kind(identity: Any) -> str:
    return "a Triton server's model" if _served(identity) else "a model file"


def _frames_or_not(sampling: Any) -> str:
    return "video frames" if sampling else "images alone"


def finished_files(base: EmbeddingSet) -> dict[str, dict[str, Any]]:
    """The video files a finished folder read to their end (name → its record in the manifest's
    "sources", `read_to_end`): a run that extends it does not read them again."""
    sources = base.manifest.get("sources")
    if not isinstance(sources, dict):
        return {}
    return {
        name: record
        for name, record in sources.items()
        if isinstance(record, dict) and read_to_end(name, record)
    }


def read_to_end(name: str, record: dict[str, Any]) -> bool:
    """True when the source `name` (its `record` in the manifest's "sources") need never be read
    again: not live (a file, or an HLS playlist that ended), not failed or cut short, and
    undamaged unless it is a local file (whose damage a rerun would meet again; a remote one's
    may be the network's)."""
    if record.get("live") or "error" in record or record.get("interrupted"):
        return False
    return not record.get("damage") or not is_location(name)


def _record(
    ids: list[str],
    failed: list[list[str]],
    frames: dict[str, Any] | None,
    finished: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A part's JSON; "frames" only where some of its items are video frames, "finished" only where
    a video file ended at this part."""
    return (
        {"ids": ids, "failed": failed}
        | ({"frames": frames} if frames else {})
        | ({"finished": finished} if finished else {})
    )


def _read_record(path: Path) -> dict[str, Any]:
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
        and isinstance(record.get("frames", {}), dict)
        and all(isinstance(info, dict) for info in record.get("frames", {}).values())
        and isinstance(record.get("finished", {}), dict)
        and all(isinstance(info, dict) for info in record.get("finished", {}).values())
    )
    if not ok:
        raise EmbeddingsError(f"{path} is damaged", "Run the same command again")
    return record
