"""The gallery rules (gallery.py): each raises its typed error in every store, and the service
answers each with its one status (serve/errors.py)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from milvus_testing import synthetic

from invspread_edge_runtime.errors import (
    DimensionMismatchError,
    DuplicateIdsError,
    EmptyGalleryError,
    GalleryError,
    IndexFileError,
    InvedgeError,
    KOutOfRangeError,
    SpaceMismatchError,
    UnknownIdsError,
)
from invspread_edge_runtime.gallery import (
    as_matrix,
    check_k,
    check_not_held,
    check_queries,
    check_space,
    unknown_ids,
)
from invspread_edge_runtime.index.gallery import Index
from invspread_edge_runtime.serve.errors import ServeError, from_invedge
from invspread_edge_runtime.serve.gallery import LiveGallery
from invspread_edge_runtime.serve.store_gallery import store_errors

DIM, N = 8, 20
COLLECTIONS = itertools.count()


@pytest.fixture(scope="module")
def lite_store(tmp_path_factory) -> str:
    pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
    pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
    return f"milvus:{tmp_path_factory.mktemp('lite') / 'rules.db'}"


@pytest.fixture(params=["index", "milvus"])
def gallery_of(request) -> Iterator[Callable[[Any], Any]]:
    """Factory: a new gallery of `emb`, an `Index` or a `MilvusGallery` (closed afterwards)."""
    opened: list[Any] = []

    def make(emb: Any) -> Any:
        if request.param == "index":
            return Index.from_embeddings(emb)
        from invspread_edge_runtime.milvus_store.build import build_gallery

        gallery = build_gallery(emb, request.getfixturevalue("lite_store"), f"rules_{next(COLLECTIONS)}")
        opened.append(gallery)
        return gallery

    yield make
    for gallery in opened:
        gallery.close()


@contextlib.contextmanager
def refused(kind: type[GalleryError], match: str) -> Iterator[pytest.ExceptionInfo]:
    """The rule's own error, never IndexFileError (that one is for a damaged or foreign index)."""
    with pytest.raises(kind, match=match) as caught:
        yield caught
    assert not isinstance(caught.value, IndexFileError)


def test_a_search_of_an_empty_gallery(gallery_of):
    emb = synthetic(3, DIM)
    gallery = gallery_of(emb)
    gallery.remove(emb.ids)
    with refused(EmptyGalleryError, "^the gallery is empty") as caught:
        gallery.search(emb.vectors[:1], k=1)
    assert "invedge index add" in caught.value.hint and "invedge index add" in caught.value.add


def test_k_out_of_range(gallery_of):
    emb = synthetic(N, DIM)
    gallery = gallery_of(emb)
    for k in (0, N + 1):
        with refused(KOutOfRangeError, f"k = {k} but the gallery holds {N} items") as caught:
            gallery.search(emb.vectors[:1], k=k)
        assert caught.value.count == N and "--k between 1 and 20" in caught.value.hint


def test_another_embedding_space(gallery_of):
    emb = synthetic(N, DIM)
    gallery = gallery_of(emb)
    with refused(SpaceMismatchError, r"the queries come from another embedding space \(space-b\)"):
        gallery.search(emb.vectors[:1], k=1, space_id="space-b")
    other = synthetic(2, DIM, space_id="space-b", prefix="b")
    with refused(SpaceMismatchError, "b.emb was embedded by a model of another embedding space"):
        gallery.add(other.vectors, other.ids, space_id="space-b", source="b.emb")
    assert len(gallery) == N


def test_another_dimension(gallery_of):
    emb = synthetic(N, DIM)
    gallery = gallery_of(emb)
    with refused(DimensionMismatchError, f"queries have dimension {DIM + 1}, the gallery {DIM}"):
        gallery.search(np.ones((1, DIM + 1), np.float32), k=1)
    with refused(DimensionMismatchError, f"new vectors have dimension {DIM + 1}, the gallery {DIM}"):
        gallery.add(np.ones((1, DIM + 1), np.float32), ["wide"], space_id="space-a")
    assert len(gallery) == N


def test_unknown_ids(gallery_of):
    emb = synthetic(N, DIM)
    gallery = gallery_of(emb)
    with refused(UnknownIdsError, "1 id not in the gallery: nope") as caught:
        gallery.remove([emb.ids[0], "nope"])
    assert caught.value.ids == ["nope"] and len(gallery) == N  # nothing removed


def test_repeated_ids(gallery_of):
    emb = synthetic(N, DIM)
    gallery = gallery_of(emb)
    more = synthetic(2, DIM, seed=1, prefix="more")
    with refused(DuplicateIdsError, "1 id repeated in more.emb: twice") as caught:
        gallery.add(more.vectors, ["twice", "twice"], space_id="space-a", source="more.emb")
    assert caught.value.ids == ["twice"] and len(gallery) == N


def test_the_file_index_refuses_ids_it_holds():
    """(A Milvus collection replaces them: an add there is an upsert.)"""
    emb = synthetic(N, DIM)
    index = Index.from_embeddings(emb)
    with refused(DuplicateIdsError, f"1 id of again.emb already in the gallery: {emb.ids[3]}") as caught:
        index.add(emb.vectors[3:4], emb.ids[3:4], source="again.emb")
    assert caught.value.ids == emb.ids[3:4]


# --- the service: one status for each rule -------------------------------------------------------


def _raised(rule: Callable[[], object]) -> InvedgeError:
    try:
        rule()
    except InvedgeError as exc:
        return exc
    raise AssertionError("the rule did not refuse")


def _raise(error: InvedgeError) -> None:
    raise error


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        pytest.param(lambda: check_k(1, 0), 409, id="empty"),
        pytest.param(lambda: check_space("space-a", {}, "space-b"), 409, id="space"),
        pytest.param(lambda: check_not_held(["x"], {"x"}, "the upload"), 409, id="id taken"),
        pytest.param(lambda: _raise(unknown_ids({"x"})), 404, id="unknown id"),
        pytest.param(lambda: check_k(11, 10), 422, id="k"),
        pytest.param(lambda: check_queries(np.ones((1, 3)), 4), 422, id="dimension"),
        pytest.param(lambda: as_matrix(np.ones((1, 1, 1))), 422, id="not a matrix"),
        pytest.param(lambda: _raise(IndexFileError("g.index is damaged")), 503, id="not a rule"),
    ],
)
def test_each_rule_has_one_status(rule, status):
    error = _raised(rule)
    answer = from_invedge(error)
    assert answer.status == status and answer.message


@pytest.fixture(params=["file", "milvus"])
def served_of(request, tmp_path) -> Iterator[Callable[[Any], Any]]:
    """Factory: the served gallery of `emb`: a `LiveGallery` of an index file, or a `StoreGallery`."""
    opened: list[Any] = []

    def make(emb: Any) -> Any:
        if request.param == "file":
            path = tmp_path / "g.index"
            Index.from_embeddings(emb).save(path)
            return LiveGallery(path)
        from invspread_edge_runtime.milvus_store.build import build_gallery
        from invspread_edge_runtime.serve.store_gallery import StoreGallery

        store = request.getfixturevalue("lite_store")
        served = StoreGallery(build_gallery(emb, store, f"served_{next(COLLECTIONS)}"))
        opened.append(served)
        return served

    yield make
    for served in opened:
        served.close()


def answer(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(ServeError) as caught:
        call()
    return caught.value.status, caught.value.message, caught.value.hint


def test_a_served_gallery_answers_each_rule_with_its_status(served_of):
    emb = synthetic(3, DIM)
    served = served_of(emb)
    query, taken = emb.vectors[:1], emb.ids[0]
    assert answer(lambda: served.search(query, 4, None)) == (
        422,
        "k = 4 but the gallery holds 3 items",
        "Use k between 1 and 3",
    )
    wide = np.ones(DIM + 1, np.float32)
    wrong_dimension = (
        422,
        f"the vector has dimension {DIM + 1}, the gallery {DIM}",
        "Send a vector of the gallery's dimension",
    )
    wrong_space = (
        409,
        "the vector comes from another embedding space (space-b) than the gallery (space-a)",
        "Embed it with the gallery's model (GET /v1/info), or serve a gallery of its space",
    )
    assert answer(lambda: served.search(wide[None, :], 1, None)) == wrong_dimension
    assert answer(lambda: served.search(query, 1, "space-b")) == wrong_space
    # an add checks the vector before the id: a wrong vector never asks the store about its id
    assert answer(lambda: served.add(taken, wide, "space-a")) == wrong_dimension
    assert answer(lambda: served.add(taken, emb.vectors[0], "space-b")) == wrong_space
    assert answer(lambda: served.add(taken, emb.vectors[0], "space-a")) == (
        409,
        f"id {taken!r} is already in the gallery",
        "Choose another id, or DELETE it first",
    )
    assert answer(lambda: served.remove("nope")) == (
        404,
        "no gallery item has the id 'nope'",
        "See the ids in the search results",
    )
    for item in emb.ids:
        served.remove(item)
    status, message, hint = answer(lambda: served.search(query, 1, None))
    assert (status, message) == (409, "the gallery is empty")
    assert hint in (
        "Add items with POST /v1/gallery or 'invedge index add'",  # the file: the CLI adds to it
        "Add items with POST /v1/gallery or 'invedge index add --store'",
    )


@pytest.mark.parametrize("missing", [422, 404])
def test_a_collection_problem_of_a_served_store_is_its_requests_fault(missing):
    """IndexFileError from Milvus' gallery (an id it cannot hold, a closed gallery): 422, 404 on a remove."""
    with pytest.raises(ServeError) as caught, store_errors(missing):
        raise IndexFileError("2 ids longer than the 1024 bytes a Milvus gallery holds", "Use shorter ids")
    assert (caught.value.status, caught.value.hint) == (missing, "Use shorter ids")
