"""Embeddings folders made from given vectors (no model), for the tests of `invedge map`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from invspread_edge_runtime.files import sha256_bytes, sha256_file

CLASSES = 3
PER_CLASS = 20


def clustered(n_per: int = PER_CLASS, classes: int = CLASSES, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Unit rows around `classes` far-apart centres, class by class."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 4
    rows = np.concatenate([c + rng.standard_normal((n_per, dim)) * 0.3 for c in centres])
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(folder: Path, vectors: np.ndarray, ids: list[str], root: Path | None) -> Path:
    """An embeddings folder as `invedge embed` writes it, from given vectors (no model needed)."""
    folder.mkdir(parents=True)
    np.save(folder / "embeddings.npy", vectors, allow_pickle=False)
    ids_bytes = json.dumps(ids).encode()
    (folder / "ids.json").write_bytes(ids_bytes)
    manifest = {
        "format": "invspread-edge-embeddings/1",
        "count": len(ids),
        "dim": int(vectors.shape[1]),
        "dtype": "float32",
        "space": {"space_id": "test/16", "embedding_dim": int(vectors.shape[1])},
        "model": {},
        "root": str(root) if root else "",
        "failed_count": 0,
        "failed": [],
        "embeddings_sha256": sha256_file(folder / "embeddings.npy"),
        "ids_sha256": sha256_bytes(ids_bytes),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def coloured_gallery(tmp_path: Path) -> Path:
    """60 small images in 3 class folders (one colour per class) and their clustered embeddings."""
    root = tmp_path / "images"
    ids = []
    colours = [(200, 30, 30), (30, 160, 30), (30, 30, 200)]
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
        for n in range(PER_CLASS):
            name = f"class{c}/img{n:02d}.png"
            Image.new("RGB", (24, 24), colours[c]).save(root / name)
            ids.append(name)
    return write_embeddings(tmp_path / "photos.emb", clustered(), ids, root)
