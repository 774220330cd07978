"""Reading an embeddings folder back (layout.py says what it holds): every file checked, vectors memory-mapped."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbeddingsError, InvedgeError, NonFiniteError
from ..files import check_regular, read_json, sha256_bytes, sha256_file
from .layout import DTYPES, FORMAT, FRAMES, IDS, MANIFEST, PARTS, REDO, VECTORS, aside_path


@dataclass
class EmbeddingSet:
    """Embeddings read back from disk. `vectors` is memory-mapped (read-only)."""

    path: Path
    vectors: np.ndarray
    ids: list[str]
    manifest: dict[str, Any]
    # the items that are video frames: id → {"source", "index", "time", "live"} (frames.json)
    frames: dict[str, dict[str, Any]] = field(default_factory=dict)

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

    @property
    def failed(self) -> list[dict[str, str]]:
        return list(self.manifest.get("failed") or [])

    def locations(self, *, frames: bool = True) -> list[str]:
        """Each item's image file (absolute), for drawing results. A video frame's is its video's
        path with the frame's `#t=` (a search grid cuts the frame from it); `frames=False` gives ""
        for frames instead (a page that loads image files: a frame has none of its own)."""
        root = Path(self.manifest.get("root") or ".")
        return ["" if not frames and item in self.frames else str(root / item) for item in self.ids]


def load_embeddings(path: str | os.PathLike[str], verify: bool = True) -> EmbeddingSet:
    """Open an embeddings folder; `verify` also checks the vectors' sha256 against the manifest.

    The ids are always checked against the manifest's sha256 (cheap; an edited ids.json would
    silently give every vector another image's name).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EmbeddingsError(
            f"{path} is a file, not an embeddings folder",
            "Give the folder written by 'invedge embed MODEL IMAGES --out DIR'",
        )
    if not path.is_dir():
        if aside_path(path).is_dir():
            raise EmbeddingsError(
                f"embeddings not found: {path} (an interrupted 'invedge embed --overwrite' left the "
                f"previous folder at {aside_path(path)})",
                "Run that 'invedge embed' command again: it puts the old or the new folder in place",
            )
        raise EmbeddingsError(
            f"embeddings not found: {path}", "Create them with 'invedge embed MODEL IMAGES --out DIR'"
        )
    if not (path / MANIFEST).is_file():
        hint = (
            "It is unfinished: run the same 'invedge embed' command again to resume"
            if (path / PARTS).is_dir()
            else "Create embeddings with 'invedge embed MODEL IMAGES --out DIR'"
        )
        raise EmbeddingsError(f"{path} is not a finished embeddings folder (no {MANIFEST})", hint)
    try:
        manifest = read_json(path / MANIFEST, "embeddings manifest")
    except EmbeddingsError:
        raise
    except Exception as exc:  # InvedgeError from read_json: keep its words, give the next step
        raise EmbeddingsError(str(exc), REDO) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EmbeddingsError(f"{path / MANIFEST} is not an invspread-edge embeddings manifest", REDO)
    count, dim, dtype = _check_manifest(path / MANIFEST, manifest)
    try:
        for name in (VECTORS, IDS):
            check_regular(path / name, "embeddings file")
    except InvedgeError as exc:
        raise EmbeddingsError(exc.message, REDO) from exc
    try:
        vectors = np.load(path / VECTORS, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise EmbeddingsError(f"{path / VECTORS} is missing or damaged ({_short(exc)})", REDO) from exc
    try:
        ids_bytes = (path / IDS).read_bytes()
        ids = json.loads(ids_bytes.decode("utf-8"))
    except FileNotFoundError as exc:
        raise EmbeddingsError(f"{path / IDS} is missing", REDO) from exc
    except OSError as exc:
        raise EmbeddingsError(f"cannot read {path / IDS}: {exc.strerror or exc}", REDO) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EmbeddingsError(f"{path / IDS} is damaged (not valid JSON)", REDO) from exc
    expected_ids = manifest.get("ids_sha256")
    if expected_ids is not None and sha256_bytes(ids_bytes) != expected_ids:
        raise EmbeddingsError(
            f"{path / IDS} does not match its manifest (sha256 differs): it was edited or damaged, "
            "so its ids may name the wrong images",
            REDO + " (never edit ids.json by hand)",
        )
    if (
        not isinstance(vectors, np.ndarray)
        or vectors.ndim != 2
        or vectors.shape != (count, dim)
        or str(vectors.dtype) != dtype
        or not isinstance(ids, list)
        or len(ids) != count
    ):
        shape = getattr(vectors, "shape", "?")
        raise EmbeddingsError(
            f"{path} is inconsistent: manifest says {count} × {dim} {dtype}, "
            f"found {shape} {getattr(vectors, 'dtype', '?')} and "
            f"{len(ids) if isinstance(ids, list) else 'no list of'} ids",
            REDO,
        )
    if not all(isinstance(item, str) for item in ids):
        raise EmbeddingsError(f"{path / IDS} holds ids that are not strings", REDO)
    if len(set(ids)) != len(ids):
        raise EmbeddingsError(f"{path / IDS} holds repeated ids", REDO)
    if verify and sha256_file(path / VECTORS) != manifest.get("embeddings_sha256"):
        raise EmbeddingsError(f"{path / VECTORS} is damaged (sha256 differs from the manifest)", REDO)
    if verify:
        _require_finite(path, vectors, ids)
    frames = _load_frames(path, manifest, ids)
    return EmbeddingSet(path=path, vectors=vectors, ids=ids, manifest=manifest, frames=frames)


def _load_frames(path: Path, manifest: dict[str, Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    """frames.json, checked against the manifest's sha256; {} for a folder of images only."""
    expected = manifest.get("frames_sha256")
    if expected is None:
        return {}
    try:
        check_regular(path / FRAMES, "embeddings file")
        data = (path / FRAMES).read_bytes()
    except InvedgeError as exc:
        raise EmbeddingsError(exc.message, REDO) from exc
    except OSError as exc:
        raise EmbeddingsError(f"cannot read {path / FRAMES}: {exc.strerror or exc}", REDO) from exc
    if sha256_bytes(data) != expected:
        raise EmbeddingsError(
            f"{path / FRAMES} does not match its manifest (sha256 differs): it was edited or damaged", REDO
        )
    try:
        frames = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EmbeddingsError(f"{path / FRAMES} is damaged (not valid JSON)", REDO) from exc
    if not isinstance(frames, dict) or not all(isinstance(v, dict) for v in frames.values()):
        raise EmbeddingsError(f"{path / FRAMES} is damaged (not a mapping of ids to frames)", REDO)
    if not set(frames) <= set(ids):
        raise EmbeddingsError(f"{path / FRAMES} names frames that are not in {IDS}", REDO)
    return frames


def _require_finite(path: Path, vectors: np.ndarray, ids: list[str], chunk: int = 65536) -> None:
    """A NaN or inf row (a broken model's, written before embedding refused them) would make every
    search through an index of it meaningless: refused by id, in chunks (no second copy in memory)."""
    bad = [
        start + int(row)
        for start in range(0, len(vectors), chunk)
        for row in np.flatnonzero(~np.isfinite(vectors[start : start + chunk]).all(axis=1))
    ]
    if bad:
        raise NonFiniteError(
            f"{path / VECTORS} holds NaN or infinite values in {len(bad)} of {len(vectors)} rows "
            f"(first: {ids[bad[0]]})",
            "Embed those images again with a model that gives finite embeddings (check it with "
            "'invedge verify'), then rebuild",
        )


def _check_manifest(path: Path, manifest: dict[str, Any]) -> tuple[int, int, str]:
    """The fields every reader relies on, with their types: (count, dim, dtype)."""

    def bad(field: str) -> EmbeddingsError:
        return EmbeddingsError(f"{path} is damaged: '{field}' is missing or invalid", REDO)

    count, dim, dtype = manifest.get("count"), manifest.get("dim"), manifest.get("dtype")
    if not _is_int(count) or count < 0:
        raise bad("count")
    if not _is_int(dim) or dim < 1:
        raise bad("dim")
    if dtype not in DTYPES:
        raise bad("dtype")
    space = manifest.get("space")
    if not isinstance(space, dict) or not isinstance(space.get("space_id"), str):
        raise bad("space")
    if not isinstance(manifest.get("root", ""), str | None):
        raise bad("root")
    if not isinstance(manifest.get("model", {}), dict):
        raise bad("model")
    failed = manifest.get("failed", [])
    if not isinstance(failed, list) or not all(isinstance(f, dict) for f in failed):
        raise bad("failed")
    for key in ("embeddings_sha256", "ids_sha256", "frames_sha256"):
        if not isinstance(manifest.get(key, ""), str):
            raise bad(key)
    return int(count), int(dim), str(dtype)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def failed_count(out: str | os.PathLike[str]) -> int:
    """How many images the finished folder `out` could not read (0 if its manifest is odd)."""
    out = Path(out)
    with contextlib.suppress(Exception):
        value = read_json(out / MANIFEST, "embeddings manifest").get("failed_count", 0)
        return int(value) if _is_int(value) else 0
    return 0
