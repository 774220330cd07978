"""`MilvusGallery` on each engine (Milvus Lite, and the real Milvus server: `where`): build, search, add,
remove, checks, upserts, rebuilds, --overwrite, recall tuning."""

from __future__ import annotations

import numpy as np
import pytest
from milvus_testing import synthetic

from invspread_edge_runtime.errors import (
    DimensionMismatchError,
    GalleryError,
    IndexFileError,
    KOutOfRangeError,
    SpaceMismatchError,
    UnknownIdsError,
)
from invspread_edge_runtime.index.gallery import Index
from invspread_edge_runtime.milvus_store import build
from invspread_edge_runtime.milvus_store.build import build_gallery
from invspread_edge_runtime.milvus_store.gallery import open_gallery


@pytest.fixture(scope="module")
def emb():
    return synthetic(2000, 32)


@pytest.fixture(scope="module")
def flat(emb, where):
    with build_gallery(emb, where.store, where.name("flat_gallery")) as gallery:
        yield gallery


@pytest.fixture(scope="module")
def hnsw(emb, where):
    with build_gallery(emb, where.store, where.name("hnsw_gallery"), kind="hnsw") as gallery:
        yield gallery


def test_flat_top10_equals_the_file_index_exact_top10(flat, emb):
    queries = synthetic(50, 32, seed=1).vectors
    exact = Index.from_embeddings(emb).search(queries, k=10, exact=True)
    found = flat.search(queries, k=10)
    assert found.searcher == "milvus-flat"
    assert found.ids == exact.ids
    np.testing.assert_allclose(found.scores, exact.scores, atol=1e-5)
    assert found.locations[0][0] == f"/photos/{exact.ids[0][0]}"
    assert [hit["id"] for hit in found.records()[0]["neighbours"]] == exact.ids[0][:10]


def test_hnsw_recall_with_the_defaults(hnsw, emb):
    assert hnsw.kind == "hnsw" and hnsw.params["m"] == 32
    assert hnsw.recall_at_10 is not None and hnsw.recall_at_10 >= 0.95
    print(f"HNSW recall@10 vs exact (2000 x 32, defaults): {hnsw.recall_at_10:.4f} {hnsw.params}")
    assert hnsw.search(emb.vectors[:3], k=5).searcher == "milvus-hnsw"


def test_info_has_the_file_index_keys_and_where(flat, where):
    info = flat.info()
    assert set(Index.from_embeddings(synthetic(3, 32)).info()) <= set(info)
    assert info["count"] == 2000 and info["dim"] == 32 and info["collection"] == where.name("flat_gallery")
    assert info["store"].startswith("milvus:") and info["space"]["space_id"] == "space-a"
    assert info["model"]["path"] == "/models/model.onnx"


def test_space_and_dimension_checks(flat, emb):
    with pytest.raises(SpaceMismatchError, match="another embedding space"):
        flat.search(emb.vectors[:1], k=5, space_id="space-b")
    with pytest.raises(DimensionMismatchError, match="dimension 16, the gallery 32"):
        flat.search(np.ones((1, 16), np.float32), k=5)
    with pytest.raises(KOutOfRangeError, match="k = 2001 but the gallery holds 2000"):
        flat.search(emb.vectors[:1], k=2001)
    other = synthetic(5, 32, space_id="space-b", prefix="b")
    with pytest.raises(
        SpaceMismatchError, match=r"b\.emb was embedded by a model of another embedding space"
    ):
        flat.add(other.vectors, other.ids, space_id="space-b", source="b.emb")
    assert len(flat) == 2000


def test_add_remove_contains_location_and_idempotent_re_add(where):
    base = synthetic(300, 32, seed=3, prefix="base")
    more = synthetic(20, 32, seed=4, prefix="more")
    with build_gallery(base, where.store, where.name("changes")) as gallery:
        assert gallery.add(more.vectors, more.ids, "space-a", more.locations(), source="more.emb") == 20
        assert len(gallery) == 320  # Strong: the add is seen at once
        assert gallery.add(more.vectors, more.ids, "space-a", more.locations(), source="more.emb") == 0
        assert len(gallery) == 320  # an upsert: no duplicates
        hit = gallery.search(more.vectors[:1], k=1)
        assert hit.ids == [[more.ids[0]]] and hit.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
        assert gallery.contains([more.ids[0], "nope"]) == {more.ids[0]}
        assert gallery.location(more.ids[1]) == more.locations()[1] and gallery.location("nope") is None
        with pytest.raises(GalleryError, match="already in the gallery under another id"):
            gallery.add(more.vectors[:1], ["renamed"], "space-a", more.locations()[:1], source="again.emb")
        with pytest.raises(UnknownIdsError, match="1 id not in the gallery: nope"):
            gallery.remove([more.ids[0], "nope"])
        assert len(gallery) == 320  # nothing removed
        assert gallery.remove(more.ids[:5]) == 5 and len(gallery) == 315
        assert not gallery.contains(more.ids[:5])
        assert sorted(gallery.iter_ids()) == sorted(base.ids + more.ids[5:])


def test_rebuild_is_idempotent_and_another_kind_is_refused(where):
    emb, name = synthetic(500, 32, seed=5), where.name("rebuilt")
    build_gallery(emb, where.store, name).close()
    with build_gallery(emb, where.store, name) as again:
        assert len(again) == 500
    with pytest.raises(IndexFileError, match="Pass --overwrite"):
        build_gallery(emb, where.store, name, kind="hnsw")
    other = synthetic(500, 32, seed=5, space_id="space-b")
    with pytest.raises(IndexFileError, match="another embedding space"):
        build_gallery(other, where.store, name)


def test_overwrite_keeps_the_old_collection_until_the_new_one_is_complete(where, monkeypatch):
    old = synthetic(400, 32, seed=6, prefix="old")
    new = synthetic(600, 32, seed=7, prefix="new")
    store, name = where.store, where.name("swapped")
    build_gallery(old, store, name).close()
    seen = {}
    swap = build._swap

    def watching(client, store, temporary, collection, writer):
        with open_gallery(store, collection) as current:  # the new one is whole: the old still serves
            seen["old"] = (current.kind, len(current))
        with pytest.raises(IndexFileError, match=f"is a temporary of a build of {name}"):
            open_gallery(store, temporary)
        with open_gallery(store, temporary, incomplete_ok=True) as coming:
            seen["new"] = (coming.kind, len(coming))
        swap(client, store, temporary, collection, writer)

    monkeypatch.setattr(build, "_swap", watching)
    with build_gallery(new, store, name, kind="hnsw", overwrite=True) as gallery:
        assert (gallery.kind, len(gallery)) == ("hnsw", 600)
        names = gallery.client.list_collections()
    assert seen == {"old": ("flat", 400), "new": ("hnsw", 600)}
    assert not [held for held in names if held.startswith(f"{name}__")]  # no leftovers

    def failing(*args, **kwargs):
        raise IndexFileError("the disk is gone")

    monkeypatch.setattr(build.writes, "upsert", failing)
    with pytest.raises(IndexFileError, match="the disk is gone"):
        build_gallery(old, store, name, overwrite=True)
    with open_gallery(store, name) as still:  # a failed overwrite leaves the old one whole
        assert (still.kind, len(still)) == ("hnsw", 600)
        assert not [held for held in still.client.list_collections() if held.startswith(f"{name}__")]


def test_missing_and_foreign_collections(where, flat):
    nothing, theirs = where.name("nothing_here"), where.name("theirs")
    with pytest.raises(IndexFileError, match=f"no collection {nothing}"):
        open_gallery(where.store, nothing)
    from pymilvus import MilvusClient

    from invspread_edge_runtime.milvus_store.address import parse_store

    client = MilvusClient(uri=parse_store(where.store).uri, token=where.token)
    client.create_collection(theirs, dimension=8)
    with pytest.raises(IndexFileError, match=rf"{theirs} .* was not made by invedge"):
        open_gallery(where.store, theirs)
    with pytest.raises(IndexFileError, match="not made by invedge"):
        build_gallery(synthetic(10, 8), where.store, theirs)


def test_too_long_ids_are_refused_before_any_write(where):
    emb = synthetic(3, 32)
    emb.ids = ["x" * 1025, "b", "c"]
    with pytest.raises(IndexFileError, match="longer than the 1024 bytes"):
        build_gallery(emb, where.store, where.name("long_ids"))
    with build_gallery(synthetic(3, 32), where.store, where.name("short_ids")):
        pass
    from pymilvus import MilvusClient

    from invspread_edge_runtime.milvus_store.address import parse_store

    client = MilvusClient(uri=parse_store(where.store).uri, token=where.token)
    assert where.name("long_ids") not in client.list_collections()


def test_ivf_is_tuned_and_exact_scans_every_list(where):
    emb = synthetic(1500, 32, seed=8)
    with build_gallery(emb, where.store, where.name("ivf_gallery"), kind="ivf") as gallery:
        assert gallery.params["nlist"] >= 1 and 1 <= gallery.params["nprobe"] <= gallery.params["nlist"]
        assert gallery.recall_at_10 is not None and gallery.recall_at_10 >= 0.95
        print(f"IVF recall@10 (1500 x 32): {gallery.recall_at_10:.4f} {gallery.params}")
        queries = synthetic(20, 32, seed=9).vectors
        exact = Index.from_embeddings(emb).search(queries, k=10, exact=True)
        gallery.set_search_params(nprobe=1)
        assert gallery.search(queries, k=10, exact=True).ids == exact.ids


@pytest.mark.parametrize("message", ["file seems not fully written", "No data left in file"])
def test_a_load_that_meets_a_segment_mid_write_is_retried(monkeypatch, message):
    """Both of Milvus Lite's partial-write messages are retried; any other error is raised at once."""
    from invspread_edge_runtime.milvus_store import gallery as gallery_module

    monkeypatch.setattr(gallery_module.time, "sleep", lambda s: None)

    class Client:
        calls = 0

        def load_collection(self, name, timeout):
            self.calls += 1
            if self.calls < 3:
                raise RuntimeError(message)

    client = Client()
    gallery_module._load_settled(client, "c", 1.0)
    assert client.calls == 3

    class Broken:
        def load_collection(self, name, timeout):
            raise RuntimeError("collection not found")

    with pytest.raises(RuntimeError, match="not found"):
        gallery_module._load_settled(Broken(), "c", 1.0)
