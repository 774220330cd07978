"""Embedding folders: written atomically in parts, resumable, verified on load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invspread_edge_runtime.embeddings import EmbeddingWriter, load_embeddings
from invspread_edge_runtime.errors import IndexFileError

SPACE = {"space_id": "0123456789abcdef/8", "checkpoint_sha256": "0123456789abcdef" * 4, "embedding_dim": 8}
MODEL = {"path": "/models/model.onnx", "sha256": "aa" * 32, "precision": "fp32"}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def writer(out, root, **kwargs) -> EmbeddingWriter:
    return EmbeddingWriter(out, space=SPACE, model=MODEL, root=root, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_written_folder_reads_back(tmp_path, dtype):
    out, x = tmp_path / "photos.emb", vectors(25)
    w = writer(out, tmp_path, dtype=dtype, part_size=10)
    for start in range(0, 25, 7):
        w.add([f"img{i}.png" for i in range(start, min(start + 7, 25))], x[start : start + 7])
    w.add_failure("broken.jpg", "unreadable image broken.jpg: UnidentifiedImageError")
    manifest = w.finish({"backend": "ort-cpu"})
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "ids.json", "manifest.json"]
    emb = load_embeddings(out)
    assert len(emb) == 25 and emb.vectors.dtype == np.dtype(dtype) and emb.dim == 8
    np.testing.assert_allclose(np.asarray(emb.vectors, np.float32), x, atol=1e-3 if dtype == "float16" else 0)
    assert emb.ids == [f"img{i}.png" for i in range(25)]
    assert emb.space_id == SPACE["space_id"] and emb.manifest["model"]["sha256"] == MODEL["sha256"]
    assert manifest["failed_count"] == 1 and manifest["failed"][0]["id"] == "broken.jpg"
    assert emb.manifest["backend"] == "ort-cpu"
    assert emb.locations()[3] == str(tmp_path.absolute() / "img3.png")


def test_interrupted_run_resumes_from_its_parts(tmp_path):
    out, x = tmp_path / "e.emb", vectors(30)
    first = writer(out, tmp_path, part_size=8)
    for i in range(20):  # killed after 20 images: 2 full parts on disk, 4 images lost from the buffer
        first.add([f"img{i}"], x[i : i + 1])
    first.add_failure("bad", "unreadable")
    del first
    with pytest.raises(IndexFileError, match="unfinished"):
        load_embeddings(out)
    second = writer(out, tmp_path, part_size=8)
    assert second.resumed and second.done_ids == {f"img{i}" for i in range(16)}
    todo = [i for i in range(30) if f"img{i}" not in second.done_ids]
    second.add([f"img{i}" for i in todo], x[todo])
    second.finish()
    emb = load_embeddings(out)
    assert sorted(emb.ids, key=lambda s: int(s[3:])) == [f"img{i}" for i in range(30)]
    order = [int(s[3:]) for s in emb.ids]
    np.testing.assert_array_equal(emb.vectors, x[order])


def test_resume_with_another_model_or_dtype_is_refused(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path, part_size=2)
    w.add(["a", "b"], vectors(2))
    with pytest.raises(IndexFileError, match="another model sha256"):
        EmbeddingWriter(out, space=SPACE, model=MODEL | {"sha256": "bb" * 32}, root=tmp_path)
    with pytest.raises(IndexFileError, match="another dtype"):
        writer(out, tmp_path, dtype="float16")
    fresh = writer(out, tmp_path, dtype="float16", overwrite=True)
    assert not fresh.resumed


def test_finished_folder_needs_overwrite_and_foreign_folders_are_left_alone(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a"], vectors(1))
    w.finish()
    with pytest.raises(IndexFileError, match="--overwrite"):
        writer(out, tmp_path)
    other = tmp_path / "holiday"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    with pytest.raises(IndexFileError, match="other files"):
        writer(other, tmp_path, overwrite=True)
    assert (other / "photo.jpg").exists()


def test_damaged_or_inconsistent_folders_are_rejected(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a", "b", "c"], vectors(3))
    w.finish()
    data = bytearray((out / "embeddings.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "embeddings.npy").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="damaged"):
        load_embeddings(out)
    load_embeddings(out, verify=False)  # the checksum is the only thing that catches this one
    (out / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(IndexFileError, match="inconsistent"):
        load_embeddings(out, verify=False)
    with pytest.raises(IndexFileError, match="not found"):
        load_embeddings(tmp_path / "missing.emb")


def test_nothing_embedded_is_an_error(tmp_path):
    w = writer(tmp_path / "e.emb", tmp_path)
    w.add_failure("a.jpg", "unreadable")
    with pytest.raises(IndexFileError, match="no image could be embedded"):
        w.finish()
