"""Embeddings folders of real image files with planted near-duplicates, for the tests of the shared
explore core and `invedge dedup` (vectors from a fixed random projection of the pixels: no model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

DIM = 32
SIZE = 28


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pixels_to_vectors(paths: list[Path]) -> np.ndarray:
    """A fixed random projection of each image's centred pixels: copies land near their original."""
    weight = np.random.default_rng(0).standard_normal((SIZE * SIZE, DIM)).astype(np.float32)
    rows = []
    for path in paths:
        grey = np.asarray(Image.open(path).convert("L").resize((SIZE, SIZE)), np.float32) / 255.0
        rows.append((grey - grey.mean()).reshape(-1))
    return unit(np.stack(rows) @ weight)


def photos_with_copies(image_folder: Path, root: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the 40-image folder (4 class folders) plus 3 planted copies: an exact byte copy, a
    brighter one and a JPEG re-encoding of three originals. Returns the root and copy → original."""
    shutil.copytree(image_folder, root)
    originals = sorted(root.rglob("*.png"))[:3]
    planted = {}
    exact = originals[0].with_name(originals[0].stem + "_copy.png")
    shutil.copyfile(originals[0], exact)
    planted[exact.relative_to(root).as_posix()] = originals[0].relative_to(root).as_posix()
    brighter = originals[1].with_name(originals[1].stem + "_bright.png")
    ImageEnhance.Brightness(Image.open(originals[1]).convert("RGB")).enhance(1.1).save(brighter)
    planted[brighter.relative_to(root).as_posix()] = originals[1].relative_to(root).as_posix()
    jpeg = originals[2].with_name(originals[2].stem + "_q60.jpg")
    Image.open(originals[2]).convert("RGB").save(jpeg, quality=60)
    planted[jpeg.relative_to(root).as_posix()] = originals[2].relative_to(root).as_posix()
    return root, planted


def embed_folder(root: Path, out: Path) -> Path:
    """An embeddings folder (as `invedge embed` writes it) of every image under `root`."""
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    paths = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
    ids = [p.relative_to(root).as_posix() for p in paths]
    space = {"space_id": "test/32", "checkpoint_sha256": "0" * 64, "embedding_dim": DIM}
    model = {"path": "/models/model.onnx", "sha256": "aa" * 32, "precision": "fp32"}
    writer = EmbeddingWriter(out, space=space, model=model, root=root)
    writer.add(ids, pixels_to_vectors(paths))
    writer.finish()
    return out


def synthetic_folder(out: Path, vectors: np.ndarray, root: Path | None = None) -> Path:
    """An embeddings folder of given vectors, ids img/00000.png…, images under `root` (not made)."""
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    ids = [f"img/{i:05d}.png" for i in range(len(vectors))]
    space = {"space_id": "test/synthetic", "checkpoint_sha256": "0" * 64, "embedding_dim": vectors.shape[1]}
    model = {"path": "/models/model.onnx", "sha256": "aa" * 32, "precision": "fp32"}
    writer = EmbeddingWriter(out, space=space, model=model, root=root or out.parent / "photos")
    writer.add(ids, vectors)
    writer.finish()
    return out
