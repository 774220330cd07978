"""Gallery index: exact kernels against a literal reference, approximate recall, changes, files."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_runtime import index as index_module
from invspread_edge_runtime.errors import IndexFileError
from invspread_edge_runtime.index import Index
from invspread_edge_runtime.topk import exact_topk, naive_topk

SPACE = {"space_id": "0123456789abcdef/16", "checkpoint_sha256": "0123456789abcdef" * 4, "embedding_dim": 16}


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int = 16, clusters: int = 20) -> np.ndarray:
    centres = unit(rng, clusters, d)
    x = centres[rng.integers(clusters, size=n)] + 0.3 * unit(rng, n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setattr(index_module, "_faiss", lambda: None)


@pytest.mark.parametrize("n, k, block", [(5000, 10, 256), (777, 1, 64), (300, 300, 2048), (1000, 17, 999)])
@pytest.mark.parametrize("n_queries", [1, 33])
def test_exact_topk_matches_full_sort(n, k, block, n_queries):
    rng = np.random.default_rng(n + k)
    gallery, queries = unit(rng, n), unit(rng, n_queries)
    scores, idx = exact_topk(queries, gallery, k, block=block)
    ref_scores, ref_idx = naive_topk(queries, gallery, k)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    assert (idx == ref_idx).mean() > 0.999  # equal up to exact ties
    assert np.all(np.diff(scores, axis=1) <= 0)  # most similar first


def test_exact_topk_rejects_bad_k():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        exact_topk(unit(rng, 2), unit(rng, 5), 6)


def test_search_graph_is_valid_onnx_and_exact():
    onnx = pytest.importorskip("onnx")
    from invspread_edge_runtime.search_graph import OrtTopK, search_graph_bytes

    onnx.checker.check_model(onnx.load_from_string(search_graph_bytes(16)), full_check=True)
    rng = np.random.default_rng(1)
    gallery, queries = unit(rng, 3000), unit(rng, 50)
    searcher = OrtTopK(gallery, device="cpu", score_budget_bytes=4 * 3000 * 7)  # 7 queries per chunk
    scores, idx = searcher.search(queries, 10)
    ref_scores, ref_idx = naive_topk(queries, gallery, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (idx == ref_idx).all()


def test_flat_numpy_faiss_and_device_paths_agree(no_faiss, monkeypatch):
    rng = np.random.default_rng(2)
    gallery, queries = unit(rng, 4000), unit(rng, 20)
    index = Index.build(gallery, ids_for(4000), SPACE)
    numpy_result = index.search(queries, k=5)
    assert numpy_result.searcher == "numpy"
    index.use_device("cpu")
    device_result = index.search(queries, k=5)
    assert device_result.searcher == "onnx-topk:cpu"
    assert device_result.ids == numpy_result.ids
    monkeypatch.undo()
    faiss = pytest.importorskip("faiss")
    del faiss
    fresh = Index.build(gallery, ids_for(4000), SPACE)
    faiss_result = fresh.search(queries, k=5)
    assert faiss_result.searcher == "faiss-flat"
    assert faiss_result.ids == numpy_result.ids
    np.testing.assert_allclose(faiss_result.scores, numpy_result.scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_report_recall_and_find_neighbours(kind, tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    gallery = clustered(rng, 3000)
    index = Index.build(gallery, ids_for(3000), SPACE, kind)
    assert index.recall_at_10 is not None and index.recall_at_10 >= 0.95  # tuned until it is
    exact = index.search(gallery[:50], k=10, exact=True)
    approx = index.search(gallery[:50], k=10)
    assert approx.searcher == f"faiss-{kind}"
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.ids, exact.ids, strict=True)])
    assert overlap >= 0.9
    index.save(tmp_path / "g.index")
    loaded = Index.load(tmp_path / "g.index")
    assert loaded.kind == kind and loaded.recall_at_10 == index.recall_at_10
    assert loaded.search(gallery[:50], k=10).ids == approx.ids


def test_approximate_index_without_faiss_searches_exactly(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    gallery = clustered(rng, 500)
    Index.build(gallery, ids_for(500), SPACE, "hnsw").save(tmp_path / "h.index")
    monkeypatch.setattr(index_module, "_faiss", lambda: None)
    loaded = Index.load(tmp_path / "h.index")
    result = loaded.search(gallery[:3], k=4)
    assert result.searcher == "numpy"
    assert [row[0] for row in result.ids] == ["item0", "item1", "item2"]


def test_add_and_remove_keep_ids_and_vectors_in_step(no_faiss):
    rng = np.random.default_rng(5)
    gallery = unit(rng, 100)
    index = Index.build(gallery[:60], ids_for(60), SPACE, locations=[f"/img/{i}.png" for i in range(60)])
    index.add(gallery[60:], ids_for(40, "new"), space_id=SPACE["space_id"])
    assert len(index) == 100
    assert index.search(gallery[70], k=1).ids == [["new10"]]
    assert index.remove(["item3", "new10"]) == 2
    result = index.search(gallery[[3, 70, 4]], k=1)
    assert result.ids[0][0] != "item3" and result.ids[1][0] != "new10" and result.ids[2] == ["item4"]
    assert result.locations[2] == ["/img/4.png"]
    with pytest.raises(IndexFileError, match="already in the gallery"):
        index.add(gallery[:1], ["item5"])
    with pytest.raises(IndexFileError, match="another embedding space"):
        index.add(gallery[:1], ["other0"], space_id="ffffffffffffffff/16")
    with pytest.raises(IndexFileError, match="dimension 8"):
        index.add(unit(rng, 1, d=8), ["other1"])
    with pytest.raises(IndexFileError, match="not in the gallery"):
        index.remove(["nope", "item4"])
    assert "item4" in index.ids  # nothing removed on error


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_remove_from_approximate_index_renumbers(kind):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    gallery = clustered(rng, 800)
    index = Index.build(gallery, ids_for(800), SPACE, kind)
    index.remove([f"item{i}" for i in range(0, 800, 2)])  # every even item
    index.add(gallery[:1], ["again0"])
    result = index.search(gallery[[1, 3, 0]], k=1)
    assert [row[0] for row in result.ids] == ["item1", "item3", "again0"]


def test_bad_queries_and_galleries_give_clear_errors(no_faiss):
    rng = np.random.default_rng(7)
    index = Index.build(unit(rng, 10), ids_for(10), SPACE)
    with pytest.raises(IndexFileError, match="another embedding space"):
        index.search(unit(rng, 1), k=1, space_id="ffffffffffffffff/16")
    with pytest.raises(IndexFileError, match="dimension 8"):
        index.search(unit(rng, 1, d=8), k=1)
    with pytest.raises(IndexFileError, match="holds 10 items"):
        index.search(unit(rng, 1), k=11)
    with pytest.raises(IndexFileError, match="empty"):
        Index.build(np.zeros((0, 16), np.float32), [], SPACE)
    with pytest.raises(IndexFileError, match="repeated"):
        Index.build(unit(rng, 2), ["a", "a"], SPACE)
    with pytest.raises(IndexFileError, match="Invalid index kind"):
        Index.build(unit(rng, 2), ["a", "b"], SPACE, kind="lsh")
    index.remove(ids_for(10))
    with pytest.raises(IndexFileError, match="empty"):
        index.search(unit(rng, 1), k=1)


def test_save_load_round_trip_and_checksum(tmp_path, no_faiss):
    rng = np.random.default_rng(8)
    gallery = unit(rng, 50)
    index = Index.build(gallery, ids_for(50), SPACE, model={"path": "/m.onnx", "sha256": "ab"})
    path = tmp_path / "g.index"
    size = index.save(path)
    assert size == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["g.index"]  # no temporary left behind
    loaded = Index.load(path)
    np.testing.assert_array_equal(loaded.vectors, gallery)
    assert loaded.ids == index.ids and loaded.space == SPACE and loaded.model["path"] == "/m.onnx"

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the vectors
    (tmp_path / "damaged.index").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="damaged"):
        Index.load(tmp_path / "damaged.index")
    (tmp_path / "short.index").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFileError, match="damaged or truncated"):
        Index.load(tmp_path / "short.index")
    np.save(tmp_path / "foreign.npy", gallery)
    with pytest.raises(IndexFileError, match="not an invspread-edge index"):
        Index.load(tmp_path / "foreign.npy")
    with pytest.raises(IndexFileError, match="not found"):
        Index.load(tmp_path / "missing.index")


def test_exact_search_follows_a_gpu_backend_when_it_can(no_faiss):
    from invspread_edge_runtime.backends.base import BackendInfo

    rng = np.random.default_rng(9)
    index = Index.build(unit(rng, 50), ids_for(50), SPACE)
    assert index.follow_backend(BackendInfo("ort-cpu", "cpu", "fp32", "m.onnx")) is not None
    reason = index.follow_backend(BackendInfo("trt", "cuda:0 (NVIDIA H100)", "int8", "m.onnx"))
    try:
        import onnxruntime

        has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        has_cuda = False
    if has_cuda and reason is None:
        assert index.search(unit(rng, 2), k=3).searcher == "onnx-topk:cuda"
    else:
        assert reason.startswith("GPU search unavailable")
        assert index.search(unit(rng, 2), k=3).searcher == "numpy"  # still answers, on the CPU
