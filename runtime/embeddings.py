"""Embedding files: a folder holding `embeddings.npy` + `ids.json` + `manifest.json`.

- `embeddings.npy`: (N, d) float32 or float16, L2-normalised rows, loaded memory-mapped and never
  with pickle;
- `ids.json`: N ids, the images' paths relative to `manifest["root"]` (POSIX separators);
- `manifest.json`: the embedding space (checkpoint sha256, dimension), the model file's sha256,
  N, the images that could not be read, and the sha256 of `embeddings.npy`. Written last: a folder
  without it is unfinished.

Streaming: `EmbeddingWriter` keeps at most one part (`part_size` rows) in memory and writes each
part atomically under `parts/`; a killed run resumes from the parts already written; `finish()`
joins them into `embeddings.npy` through a memory map, so folders larger than memory work.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFileError
from .files import atomic_path, atomic_write_json, read_json, sha256_file

FORMAT = "invspread-edge-embeddings/1"
DTYPES = ("float32", "float16")
VECTORS, IDS, MANIFEST, PARTS = "embeddings.npy", "ids.json", "manifest.json", "parts"


@dataclass
class EmbeddingSet:
    """Embeddings read back from disk. `vectors` is memory-mapped (read-only)."""

    path: Path
    vectors: np.ndarray
    ids: list[str]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def space(self) -> dict[str, Any]:
        return self.manifest["space"]

    @property
    def space_id(self) -> str:
        return self.manifest["space"]["space_id"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def locations(self) -> list[str]:
        """Each item's image file (absolute), for drawing results."""
        root = Path(self.manifest.get("root") or ".")
        return [str(root / item) for item in self.ids]


def load_embeddings(path: str | os.PathLike[str], verify: bool = True) -> EmbeddingSet:
    """Open an embeddings folder; `verify` also checks the vectors' sha256 against the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise IndexFileError(
            f"embeddings not found: {path}", "Create them with 'invedge embed MODEL IMAGES --out DIR'"
        )
    if not (path / MANIFEST).is_file():
        hint = (
            "It is unfinished: run the same 'invedge embed' command again to resume"
            if (path / PARTS).is_dir()
            else "Create embeddings with 'invedge embed MODEL IMAGES --out DIR'"
        )
        raise IndexFileError(f"{path} is not a finished embeddings folder (no {MANIFEST})", hint)
    manifest = read_json(path / MANIFEST, "embeddings manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(f"{path / MANIFEST} is not an invspread-edge embeddings manifest")
    try:
        vectors = np.load(path / VECTORS, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path / VECTORS} is missing or damaged ({exc})") from exc
    ids = read_json(path / IDS, "embedding ids")
    count, dim = int(manifest.get("count", -1)), int(manifest.get("dim", -1))
    if (
        vectors.ndim != 2
        or vectors.shape != (count, dim)
        or str(vectors.dtype) != manifest.get("dtype")
        or not isinstance(ids, list)
        or len(ids) != count
    ):
        raise IndexFileError(
            f"{path} is inconsistent: manifest says {count} × {dim} {manifest.get('dtype')}, "
            f"found {vectors.shape} {vectors.dtype} and {len(ids) if isinstance(ids, list) else '?'} ids"
        )
    if verify and sha256_file(path / VECTORS) != manifest.get("embeddings_sha256"):
        raise IndexFileError(f"{path / VECTORS} is damaged (sha256 differs from the manifest)", "Embed again")
    return EmbeddingSet(path=path, vectors=vectors, ids=ids, manifest=manifest)


class EmbeddingWriter:
    """Write embeddings to a folder part by part; resumable; `finish()` makes the final files.

    `space`: {"space_id", "checkpoint_sha256", "embedding_dim"}; `model`: facts about the model
    file (at least "sha256"). A run resumes only with the same model file, root and dtype.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        space: dict[str, Any],
        model: dict[str, Any],
        root: str | os.PathLike[str],
        dtype: str = "float32",
        part_size: int = 4096,
        overwrite: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"Invalid dtype {dtype!r}. Only {', '.join(DTYPES)} are supported.")
        self.out = Path(out)
        self.space, self.model, self.dtype = dict(space), dict(model), dtype
        self.root = str(Path(root).absolute())
        self.dim = int(space["embedding_dim"])
        self.part_size = part_size
        self._state = {
            "format": FORMAT,
            "space_id": self.space["space_id"],
            "model_sha256": self.model["sha256"],
            "root": self.root,
            "dtype": dtype,
        }
        self._prepare(overwrite)
        self.done_ids, self.failures, self._parts, self.resumed = self._scan_parts()
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._new_failures: list[list[str]] = []

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
        parts = self.out / PARTS
        vectors = (
            np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), dtype=self.dtype)
        )
        rows = min(len(vectors), len(self._ids))  # an interrupt between the two appends of add()
        vectors, self._ids = vectors[:rows], self._ids[:rows]
        with atomic_path(parts / f"part-{number:06d}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        atomic_write_json(parts / f"part-{number:06d}.json", {"ids": self._ids, "failed": self._new_failures})
        self._parts.append((number, len(self._ids)))
        self.failures.extend(self._new_failures)
        self._ids, self._vectors, self._new_failures = [], [], []

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Join the parts into the final files, write the manifest last, remove the parts."""
        self.flush()
        total = self.count
        if total == 0:
            raise IndexFileError(
                f"no image could be embedded ({len(self.failures)} unreadable)",
                "Check the images; the reasons are in " + str(self.out / PARTS),
            )
        parts = self.out / PARTS
        ids: list[str] = []
        with atomic_path(self.out / VECTORS) as tmp:
            target = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(total, self.dim))
            row = 0
            for number, count in self._parts:
                if count:
                    target[row : row + count] = np.load(parts / f"part-{number:06d}.npy", allow_pickle=False)
                    row += count
                ids.extend(read_json(parts / f"part-{number:06d}.json", "embedding part")["ids"])
            target.flush()
            del target
            digest = sha256_file(tmp)
        atomic_write_json(self.out / IDS, ids)
        manifest = {
            "format": FORMAT,
            "count": total,
            "dim": self.dim,
            "dtype": self.dtype,
            "space": self.space,
            "model": self.model,
            "root": self.root,
            "failed_count": len(self.failures),
            "failed": [{"id": i, "reason": r} for i, r in self.failures],
            "embeddings_sha256": digest,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        atomic_write_json(self.out / MANIFEST, manifest)
        shutil.rmtree(parts, ignore_errors=True)
        return manifest

    # --- resume and overwrite -------------------------------------------------------------------

    def _prepare(self, overwrite: bool) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise IndexFileError(f"{out} exists and is not a folder", "Choose another --out")
        ours = {VECTORS, IDS, MANIFEST, PARTS}
        present = {p.name for p in out.iterdir()} if out.is_dir() else set()
        if present - ours:
            raise IndexFileError(
                f"{out} already holds other files; refusing to write embeddings into it",
                "Choose a new or empty --out folder",
            )
        if overwrite:
            for name in present:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        elif MANIFEST in present:
            raise IndexFileError(
                f"{out} already holds finished embeddings", "Pass --overwrite to embed again"
            )
        parts = out / PARTS
        state_file = parts / "state.json"
        if state_file.is_file():
            state = read_json(state_file, "resume state")
            for key in ("space_id", "model_sha256", "root", "dtype"):
                if state.get(key) != self._state[key]:
                    raise IndexFileError(
                        f"{out} holds an unfinished run with another {key.replace('_', ' ')} "
                        f"({state.get(key)!r}, now {self._state[key]!r})",
                        "Pass --overwrite to start over, or resume with the same model, images and dtype",
                    )
        else:
            atomic_write_json(state_file, self._state)

    def _scan_parts(self) -> tuple[set[str], list[list[str]], list[tuple[int, int]], bool]:
        done: set[str] = set()
        failures: list[list[str]] = []
        parts: list[tuple[int, int]] = []
        folder = self.out / PARTS
        number = 0
        while (folder / f"part-{number:06d}.json").is_file() and (
            folder / f"part-{number:06d}.npy"
        ).is_file():
            try:
                record = json.loads((folder / f"part-{number:06d}.json").read_text(encoding="utf-8"))
                header = np.load(folder / f"part-{number:06d}.npy", mmap_mode="r", allow_pickle=False)
                if header.shape != (len(record["ids"]), self.dim):
                    break
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                break  # a damaged tail part: redo from here
            done.update(record["ids"])
            done.update(item for item, _ in record["failed"])
            failures.extend(record["failed"])
            parts.append((number, len(record["ids"])))
            number += 1
        return done, failures, parts, bool(parts)


def iter_new(paths: Iterable[Path], root: Path, done: set[str]) -> list[tuple[str, Path]]:
    """(id, path) for the paths not already in `done`; ids are POSIX paths relative to `root`."""
    pending = []
    for path in paths:
        item = relative_id(path, root)
        if item not in done:
            pending.append((item, path))
    return pending


def relative_id(path: Path, root: Path) -> str:
    """`path` relative to `root` (lexically when it can: no file-system calls), else absolute."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        pass
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def embed_to_folder(
    embedder: Any,
    paths: list[Path],
    root: Path,
    out: str | os.PathLike[str],
    dtype: str = "float32",
    overwrite: bool = False,
    on_progress: Any = None,
    part_size: int = 4096,
) -> dict[str, Any]:
    """Embed `paths` with an `embed.Embedder` into an embeddings folder; resumes an unfinished one.

    `on_progress(done, total)` is called after each batch (`done` counts resumed images too).
    Unreadable images are skipped and listed in the manifest. Returns the manifest.
    """
    from .files import sha256_file

    meta = embedder.meta
    model_path = Path(embedder.info.model_path).resolve()
    writer = EmbeddingWriter(
        out,
        space={
            "space_id": meta.space_id,
            "checkpoint_sha256": meta.checkpoint_sha256,
            "embedding_dim": meta.embedding_dim,
        },
        model={
            "path": str(model_path),
            "sha256": sha256_file(model_path),
            "precision": meta.precision,
            "arch": meta.arch,
            "image_size": meta.image_size,
        },
        root=root,
        dtype=dtype,
        part_size=part_size,
        overwrite=overwrite,
    )
    pending = iter_new(paths, Path(writer.root), writer.done_ids)
    total = len(paths)
    done = total - len(pending)
    resumed = done
    started = time.perf_counter()
    if on_progress is not None:
        on_progress(done, total)
    try:
        for batch in embedder.embed_batches([p for _, p in pending]):
            writer.add([pending[i][0] for i in batch.positions], batch.vectors)
            for position, reason in batch.failures:
                writer.add_failure(pending[position][0], reason)
            done += len(batch.positions) + len(batch.failures)
            if on_progress is not None:
                on_progress(done, total)
    except KeyboardInterrupt:
        writer.flush()  # Ctrl-C: keep what was embedded, the next run resumes after it
        raise
    seconds = time.perf_counter() - started
    return writer.finish(
        {
            "backend": embedder.info.name,
            "resumed": resumed,
            "seconds": round(seconds, 3),
        }
    )
