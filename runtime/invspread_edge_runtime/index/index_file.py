"""The index file: one checksummed file holding a gallery and its engine's state, read and written here.

Layout (no pickle): magic `IVEIDX01`, u64 header length, a JSON header (kind, space, params,
section offsets), the raw sections (vectors float32, ids JSON, locations JSON, the faiss index in
faiss' own binary format when there is one), and the sha256 of everything before it: a damaged,
truncated or foreign file is rejected on load. Writes are atomic; writers of one file hold its lock
(`writing`) for the whole read-modify-write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import hooks
from ..errors import IndexFileError, InvedgeError
from ..files import atomic_path, check_regular, remove_leftovers
from ..locks import exclusive_lock
from ..version import __version__
from .settings import KINDS

FORMAT = "invspread-edge-index/1"
MAGIC = b"IVEIDX01"
REBUILD = "Build the index again with 'invedge index build EMBEDDINGS --out FILE --overwrite'"


@dataclass
class IndexFile:
    """What an index file holds, checked: the header and the gallery's sections."""

    header: dict[str, Any]  # kind, space, model, params, recall_at_10, sections, ...
    vectors: np.ndarray  # (N, d) float32
    ids: list[str]
    locations: list[str]
    data: bytes = field(repr=False)  # the whole file
    body: int = field(repr=False)  # where the sections start

    def faiss(self) -> bytes | None:
        """The approximate index in faiss' own format, when the file has one (read only if asked)."""
        spec = self.header["sections"].get("faiss")
        if spec is None:
            return None
        start = self.body + int(spec["offset"])
        return self.data[start : start + int(spec["nbytes"])]


def write_index(
    path: str | os.PathLike[str],
    header: dict[str, Any],
    vectors: np.ndarray,
    ids: list[str],
    locations: list[str],
    faiss: bytes | None = None,
) -> int:
    """Write atomically (`header` gets the section offsets, a version and a date); returns the size."""
    flat = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1).view(np.uint8)
    sections: list[tuple[str, bytes | memoryview, dict[str, Any]]] = [
        ("vectors", memoryview(flat), {"dtype": "float32", "shape": list(vectors.shape)}),  # (0, d) too
        ("ids", json.dumps(ids).encode("utf-8"), {}),
        ("locations", json.dumps(locations).encode("utf-8"), {}),
    ]
    if faiss is not None:
        sections.append(("faiss", faiss, {}))
    header = header | {"toolkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    header["sections"] = {}
    offset = 0
    for name, data, extra in sections:
        header["sections"][name] = {"offset": offset, "nbytes": len(data), **extra}
        offset += len(data)
    header_bytes = json.dumps(header).encode("utf-8")
    digest = hashlib.sha256()
    chunks = [MAGIC, struct.pack("<Q", len(header_bytes)), header_bytes, *(d for _, d, _ in sections)]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for number, chunk in enumerate(chunks):
            fh.write(chunk)
            digest.update(chunk)
            if number == 3:
                fh.flush()
                hooks.reached("index-save")  # a kill here: a half-written temporary file
        fh.write(digest.digest())
    return Path(path).stat().st_size


def read_index(path: str | os.PathLike[str]) -> IndexFile:
    """Read and verify an index file; damaged, truncated or foreign files raise IndexFileError."""
    path = Path(path)
    data = _read_bytes(path)
    if not data.startswith(MAGIC):
        raise IndexFileError(
            f"{path} is not an invspread-edge index (wrong magic bytes)",
            "Give the file written by 'invedge index build'",
        )
    if len(data) < len(MAGIC) + 8 + 32 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise IndexFileError(f"{path} is damaged or truncated (checksum mismatch)", REBUILD)
    (header_len,) = struct.unpack_from("<Q", data, len(MAGIC))
    try:
        return _parse(data, len(MAGIC) + 8 + header_len)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise IndexFileError(f"{path} has an unreadable header or sections ({exc})", REBUILD) from exc


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[Path]:
    """Hold the lock of index file `path` for a read-modify-write (build, add, remove).

    Also removes the temporary files that writers of `path` killed mid-save left beside it.
    """
    path = Path(path)
    with exclusive_lock(path, "index", timeout=timeout):
        remove_leftovers(path.absolute().parent, [path.name])
        yield path


def _read_bytes(path: Path) -> bytes:
    """The whole file, or the one-line error for a path that is not a readable index file."""
    try:
        check_regular(path, "index")
    except InvedgeError as exc:
        raise IndexFileError(exc.message, "Give the index file written by 'invedge index build'") from exc
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise IndexFileError(
            f"index not found: {path}", "Build one with 'invedge index build EMBEDDINGS --out FILE'"
        ) from exc
    except IsADirectoryError as exc:
        hint = (
            f"It is an embeddings folder: build an index from it with 'invedge index build {path} --out FILE'"
            if (path / "manifest.json").is_file()
            else "Give the index file written by 'invedge index build'"
        )
        raise IndexFileError(f"{path} is a folder, not an index file", hint) from exc
    except OSError as exc:
        hint = (
            "Check its permissions"
            if exc.errno in (errno.EACCES, errno.EPERM)
            else "Check the path (a symbolic link that loops, or a failing disk)"
        )
        raise IndexFileError(f"cannot read {path}: {exc.strerror or exc}", hint) from exc


def _parse(data: bytes, body: int) -> IndexFile:
    """Header and sections of a checksummed index file; ValueError/KeyError/TypeError if odd."""
    header = json.loads(data[len(MAGIC) + 8 : body].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}")
    sections = header["sections"]
    if not isinstance(sections, dict) or not isinstance(header.get("space"), dict):
        raise ValueError("no sections or space")
    if header.get("kind") not in KINDS or not isinstance(header.get("params") or {}, dict):
        raise ValueError(f"kind {header.get('kind')!r}")

    def section(name: str) -> bytes:
        spec = sections[name]
        start, nbytes = int(spec["offset"]), int(spec["nbytes"])
        if start < 0 or nbytes < 0 or body + start + nbytes > len(data) - 32:
            raise ValueError(f"section {name} out of bounds")
        return data[body + start : body + start + nbytes]

    shape = tuple(int(n) for n in sections["vectors"]["shape"])
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"vectors of shape {shape}")
    vectors = np.frombuffer(section("vectors"), dtype="<f4").reshape(shape).astype(np.float32)
    ids = json.loads(section("ids"))
    locations = json.loads(section("locations"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("ids are not a list of strings")
    if not isinstance(locations, list) or not all(isinstance(i, str) for i in locations):
        raise ValueError("locations are not a list of strings")
    if len(ids) != shape[0] or len(locations) != shape[0] or len(set(ids)) != len(ids):
        raise ValueError("inconsistent sections")
    return IndexFile(header, vectors, ids, locations, data, body)
