"""Gallery index: exact kernels against a literal reference, approximate recall, changes, files."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_runtime.errors import (
    DimensionMismatchError,
    DuplicateIdsError,
    EmptyGalleryError,
    IndexFileError,
    KOutOfRangeError,
    SpaceMismatchError,
    UnknownIdsError,
)
from invspread_edge_runtime.index import faiss_engines
from invspread_edge_runtime.index import index_file as index_module
from invspread_edge_runtime.index.gallery import Index
from invspread_edge_runtime.index.topk import exact_topk, naive_topk

SPACE = {"space_id": "0123456789abcdef/16", "checkpoint_sha256": "0123456789abcdef" * 4, "embedding_dim": 16}
# A score of two unit vectors in d = 16 is a float32 sum of 16 products: within 16 · 2^-24 ≈ 1e-6 of
# the exact value whatever the order of the sum (BLAS kernel, block, chunk, faiss), so two kernels'
# scores differ by at most ≈ 2e-6. Where they rank items differently, those items are near-ties.
SCORE_ATOL = 1e-5


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int = 16, clusters: int = 20) -> np.ndarray:
    centres = unit(rng, clusters, d)
    x = centres[rng.integers(clusters, size=n)] + 0.3 * unit(rng, n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def rows_of(ids: list[list[str]]) -> np.ndarray:
    """Search result ids of `ids_for(n)` items → their gallery rows."""
    return np.array([[int(i.removeprefix("item")) for i in row] for row in ids])


def assert_same_ranking(
    queries: np.ndarray, gallery: np.ndarray, idx: np.ndarray, ref_idx: np.ndarray
) -> None:
    """`idx` ranks the gallery like `ref_idx` up to near-ties: at every rank, the item found has the
    exact (float64) score of the reference's item within SCORE_ATOL. Two kernels that sum in another
    order may swap items whose scores differ by ~1e-7; a wrong row, a lost one or another order fails."""
    exact = queries.astype(np.float64) @ gallery.astype(np.float64).T
    np.testing.assert_allclose(
        np.take_along_axis(exact, np.asarray(idx), axis=1),
        np.take_along_axis(exact, np.asarray(ref_idx), axis=1),
        rtol=0,
        atol=SCORE_ATOL,
    )
    assert all(len(set(row)) == len(row) for row in np.asarray(idx).tolist())  # no item twice


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setattr(faiss_engines, "faiss_module", lambda: None)


@pytest.mark.parametrize("n, k, block", [(5000, 10, 256), (777, 1, 64), (300, 300, 2048), (1000, 17, 999)])
@pytest.mark.parametrize("n_queries", [1, 33])
def test_exact_topk_matches_full_sort(n, k, block, n_queries):
    rng = np.random.default_rng(n + k)
    gallery, queries = unit(rng, n), unit(rng, n_queries)
    scores, idx = exact_topk(queries, gallery, k, block=block)
    ref_scores, ref_idx = naive_topk(queries, gallery, k)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_ATOL)
    assert_same_ranking(queries, gallery, idx, ref_idx)
    assert np.all(np.diff(scores, axis=1) <= 0)  # most similar first


def test_exact_topk_rejects_bad_k():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        exact_topk(unit(rng, 2), unit(rng, 5), 6)


def test_search_graph_is_valid_onnx_and_exact():
    onnx = pytest.importorskip("onnx")
    from invspread_edge_runtime.index.search_graph import OrtTopK, search_graph_bytes

    onnx.checker.check_model(onnx.load_from_string(search_graph_bytes(16)), full_check=True)
    rng = np.random.default_rng(1)
    gallery, queries = unit(rng, 3000), unit(rng, 50)
    searcher = OrtTopK(gallery, device="cpu", score_budget_bytes=4 * 3000 * 7)  # 7 queries per chunk
    scores, idx = searcher.search(queries, 10)
    ref_scores, ref_idx = naive_topk(queries, gallery, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_ATOL)
    assert_same_ranking(queries, gallery, idx, ref_idx)


def test_flat_numpy_faiss_and_device_paths_agree(no_faiss, monkeypatch):
    rng = np.random.default_rng(2)
    gallery, queries = unit(rng, 4000), unit(rng, 20)
    index = Index.build(gallery, ids_for(4000), SPACE)
    numpy_result = index.search(queries, k=5)
    assert numpy_result.searcher == "numpy"
    index.use_device("cpu")
    device_result = index.search(queries, k=5)
    assert device_result.searcher == "onnx-topk:cpu"
    assert_same_ranking(queries, gallery, rows_of(device_result.ids), rows_of(numpy_result.ids))
    monkeypatch.undo()
    faiss = pytest.importorskip("faiss")
    del faiss
    fresh = Index.build(gallery, ids_for(4000), SPACE)
    faiss_result = fresh.search(queries, k=5)
    assert faiss_result.searcher == "faiss-flat"
    assert_same_ranking(queries, gallery, rows_of(faiss_result.ids), rows_of(numpy_result.ids))
    np.testing.assert_allclose(faiss_result.scores, numpy_result.scores, rtol=0, atol=SCORE_ATOL)


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
    monkeypatch.setattr(faiss_engines, "faiss_module", lambda: None)
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
    with pytest.raises(DuplicateIdsError, match="already in the gallery"):
        index.add(gallery[:1], ["item5"])
    with pytest.raises(SpaceMismatchError, match="another embedding space"):
        index.add(gallery[:1], ["other0"], space_id="ffffffffffffffff/16")
    with pytest.raises(DimensionMismatchError, match="dimension 8"):
        index.add(unit(rng, 1, d=8), ["other1"])
    with pytest.raises(UnknownIdsError, match="not in the gallery"):
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
    with pytest.raises(SpaceMismatchError, match="another embedding space"):
        index.search(unit(rng, 1), k=1, space_id="ffffffffffffffff/16")
    with pytest.raises(DimensionMismatchError, match="dimension 8"):
        index.search(unit(rng, 1, d=8), k=1)
    with pytest.raises(KOutOfRangeError, match="holds 10 items"):
        index.search(unit(rng, 1), k=11)
    with pytest.raises(IndexFileError, match="empty"):
        Index.build(np.zeros((0, 16), np.float32), [], SPACE)
    with pytest.raises(DuplicateIdsError, match="repeated"):
        Index.build(unit(rng, 2), ["a", "a"], SPACE)
    with pytest.raises(IndexFileError, match="Invalid index kind"):
        Index.build(unit(rng, 2), ["a", "b"], SPACE, kind="lsh")
    index.remove(ids_for(10))
    with pytest.raises(EmptyGalleryError, match="empty"):
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


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_an_empty_gallery_is_a_valid_index(kind, tmp_path):
    if kind != "flat":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(10)
    gallery = clustered(rng, 200)
    index = Index.build(gallery, ids_for(200), SPACE, kind)
    assert index.remove(ids_for(200)) == 200
    index.save(tmp_path / "g.index")  # the last item removed: saved, not a crash
    empty = Index.load(tmp_path / "g.index")
    assert len(empty) == 0 and empty.dim == 16 and empty.info()["count"] == 0
    with pytest.raises(EmptyGalleryError, match="empty"):
        empty.search(gallery[:1], k=1)
    empty.add(gallery[:5], ids_for(5, "back"), space_id=SPACE["space_id"])
    empty.save(tmp_path / "g.index")
    again = Index.load(tmp_path / "g.index")
    assert again.search(gallery[:5], k=1, exact=True).ids == [[f"back{i}"] for i in range(5)]


def test_an_approximate_search_that_finds_fewer_than_k_says_so():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    gallery = clustered(rng, 400)
    index = Index.build(gallery, ids_for(400), SPACE, "ivf", nlist=40, nprobe=1)
    result = index.search(gallery[:3], k=300)  # one list of 40 holds about 10 items
    assert result.short == 3 and result.found.max() < 300
    assert len(result.notes) == 1
    note = result.notes[0]
    assert "fewer than k = 300" in note and "--nprobe" in note and "--exact" in note
    records = result.records(["q0", "q1", "q2"])
    assert [r["found"] for r in records] == [len(row) for row in result.ids]
    assert all(len(r["neighbours"]) == r["found"] and r["found"] < 300 for r in records)
    assert all(n["id"] in index.ids for r in records for n in r["neighbours"])  # no -1 rows
    exact = index.search(gallery[:3], k=300, exact=True)
    assert exact.short == 0 and exact.notes == [] and exact.found.tolist() == [300] * 3


def test_adding_another_models_embeddings_is_not_called_queries(no_faiss):
    rng = np.random.default_rng(12)
    index = Index.build(unit(rng, 4), ids_for(4), SPACE, model={"path": "/m/model.onnx"})
    with pytest.raises(SpaceMismatchError) as caught:
        index.add(unit(rng, 1), ["x"], space_id="ffffffffffffffff/16", source="other.emb")
    message = str(caught.value)
    assert "other.emb" in message and "/m/model.onnx" in message and "quer" not in message


def _index_file(path, header_edit=None, sections=None):
    """An index file with a valid checksum around a header and sections of our choosing."""
    import hashlib
    import json
    import struct

    sections = sections or {
        "vectors": np.zeros((2, 16), "<f4").tobytes(),
        "ids": b'["a", "b"]',
        "locations": b'["", ""]',
    }
    header = {
        "format": index_module.FORMAT,
        "kind": "flat",
        "space": SPACE,
        "params": {},
        "sections": {},
    }
    offset = 0
    for name, data in sections.items():
        header["sections"][name] = {"offset": offset, "nbytes": len(data)}
        offset += len(data)
    header["sections"]["vectors"]["shape"] = [2, 16]
    header = header_edit(header) if header_edit else header
    header_bytes = json.dumps(header).encode()
    body = (
        index_module.MAGIC + struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(sections.values())
    )
    path.write_bytes(body + hashlib.sha256(body).digest())
    return path


WRONG_INDEXES = {
    "header is a list": dict(header_edit=lambda h: [h]),
    "space is text": dict(header_edit=lambda h: h | {"space": "x"}),
    "kind is unknown": dict(header_edit=lambda h: h | {"kind": "lsh"}),
    "sections out of bounds": dict(
        header_edit=lambda h: h | {"sections": h["sections"] | {"ids": {"offset": 10**9, "nbytes": 5}}}
    ),
    "vectors of another shape": dict(
        header_edit=lambda h: (
            h | {"sections": h["sections"] | {"vectors": h["sections"]["vectors"] | {"shape": [3, 16]}}}
        )
    ),
    "vectors 1-D": dict(
        header_edit=lambda h: (
            h | {"sections": h["sections"] | {"vectors": h["sections"]["vectors"] | {"shape": [32]}}}
        )
    ),
    "ids not a list": dict(sections={"vectors": bytes(128), "ids": b'{"a": 1}  ', "locations": b'["", ""]'}),
    "ids not strings": dict(sections={"vectors": bytes(128), "ids": b"[1, 2]", "locations": b'["", ""]'}),
    "ids repeated": dict(sections={"vectors": bytes(128), "ids": b'["a", "a"]', "locations": b'["", ""]'}),
    "ids not UTF-8": dict(
        sections={"vectors": bytes(128), "ids": b'["\xff", "b"]', "locations": b'["", ""]'}
    ),
    "faiss blob is garbage": dict(
        sections={
            "vectors": bytes(128),
            "ids": b'["a", "b"]',
            "locations": b'["", ""]',
            "faiss": b"garbage!" * 8,
        }
    ),
}


@pytest.mark.parametrize("what", list(WRONG_INDEXES))
def test_every_kind_of_wrong_index_file_is_one_clear_error(tmp_path, what):
    if what == "faiss blob is garbage":
        pytest.importorskip("faiss")
    path = _index_file(tmp_path / "g.index", **WRONG_INDEXES[what])
    with pytest.raises(IndexFileError) as caught:
        Index.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert "index build" in str(caught.value)  # the next step


def test_a_folder_or_an_embeddings_folder_given_as_index_says_what_to_do(tmp_path):
    (tmp_path / "photos.emb").mkdir()
    (tmp_path / "photos.emb" / "manifest.json").write_text("{}")
    with pytest.raises(IndexFileError, match="build an index from it"):
        Index.load(tmp_path / "photos.emb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFileError, match="is a folder, not an index file"):
        Index.load(tmp_path / "empty")
    _index_file(tmp_path / "ok.index")
    assert Index.load(tmp_path / "ok.index").ids == ["a", "b"]  # the helper makes valid files


def test_writing_an_index_takes_its_lock_and_clears_dead_writers_leftovers(tmp_path, no_faiss):
    from invspread_edge_runtime.errors import LockedError
    from invspread_edge_runtime.locks import exclusive_lock

    path = tmp_path / "g.index"
    leftover = tmp_path / ".g.index.x1y2z3.tmp"
    leftover.write_bytes(b"half")
    other = tmp_path / ".h.index.x1y2z3.tmp"
    other.write_bytes(b"someone else's")
    with index_module.writing(path):
        assert not leftover.exists() and other.exists()
        with pytest.raises(LockedError), exclusive_lock(path, "index", timeout=0):
            pass


@pytest.mark.parametrize("with_faiss", [True, False])
def test_threads_searching_a_fresh_index_all_get_whole_answers(tmp_path, monkeypatch, with_faiss):
    """The exact engine is built on the first search: a thread arriving meanwhile must not see it half
    built (an empty faiss index answered rows of -1, so `invedge serve` returned no neighbours)."""
    import threading

    if not with_faiss:
        monkeypatch.setattr(faiss_engines, "faiss_module", lambda: None)
    elif faiss_engines.faiss_module() is None:
        pytest.skip("faiss is not installed")
    rng = np.random.default_rng(11)
    gallery, queries = unit(rng, 2000), unit(rng, 4)
    path = tmp_path / "g.index"
    Index.build(gallery, ids_for(2000), SPACE).save(path)
    expected = Index.load(path).search(queries, k=5).ids
    for _ in range(5):  # a fresh index each round: its engine not built yet
        index, start, answers = Index.load(path), threading.Barrier(8), []

        def search(index=index, start=start, answers=answers) -> None:
            start.wait()
            answers.append(index.search(queries, k=5).ids)

        threads = [threading.Thread(target=search) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [expected] * 8


def test_an_unreadable_index_path_is_not_blamed_on_permissions(tmp_path):
    """A link that loops is no permission problem: the hint says where to look."""
    loop = tmp_path / "g.index"
    loop.symlink_to(loop.name)
    with pytest.raises(IndexFileError, match="Too many levels of symbolic links") as exc:
        Index.load(loop)
    assert "permission" not in str(exc.value).lower() and "Check the path" in exc.value.hint


@pytest.mark.parametrize(
    ("model", "tail"),
    [
        ({"path": "/runs/shop/export/model.onnx"}, "QUERY.jpg --k 5"),
        (
            {"path": "grpc://gpu-box:8001/invedge_shop"},
            "--k 5 --model triton:grpc://gpu-box:8001/invedge_shop",
        ),
        ({"path": "http://user:secret@gpu-box:8000/m"}, "--k 5 --model triton:http://gpu-box:8000/m"),
    ],
)
def test_the_build_hint_names_the_triton_model_that_embedded_the_gallery(capsys, tmp_path, model, tail):
    """`invedge index build`'s next step for a gallery embedded through `triton:URL` passes that
    model (search has no local one to find), credentials left out."""
    from invspread_edge_runtime.commands.index import _report_built
    from invspread_edge_runtime.index.manage import IndexBuildResult

    facts = {"kind": "flat", "count": 3, "model": model, "recall_at_10": None, "params": {}}
    _report_built(IndexBuildResult(facts, 0.1, tmp_path / "g.index", 10))
    err = capsys.readouterr().err
    hint = next(line for line in err.splitlines() if "next:" in line)
    assert hint.rstrip().endswith(tail) and "secret" not in err, err
