"""`invedge serve --store S --collection C`: the real server on a Milvus Lite gallery (milvus-lite 3's
Python engine, in the server's process) and on a Milvus standalone server (`where`): its answers equal `open_gallery`'s, its
changes land in Milvus, its refusals have the file gallery's statuses, and its bad flags are one line.

A Milvus Lite file is opened by one process at a time, so what this process reads of a store (the
reference searches, what a change left behind) it reads before the server starts or after it stopped,
and closes (the last client of a file closed lets go of it).
"""

from __future__ import annotations

import sys
import threading
import time

import milvus_testing
import numpy as np
import pytest
from milvus_testing import ENGINES, SERVERS, Where
from serve_client import call, get, image_files, post_files, post_json
from tiny import invedge

from invspread_edge_runtime import Embedder, Index

pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")

COLLECTION = "gallery"
K = 5
K_MAX = 50


def build_store(embeddings, folder, keep: int | None = None, where: Where | None = None) -> str:
    """A store (Milvus Lite in `folder` unless `where` says) whose collection `where.name(COLLECTION)`
    holds the embeddings (the first `keep` of them)."""
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.build import build_gallery

    where = where or Where(f"milvus:{folder / 'gallery.db'}")
    emb = load_embeddings(embeddings)
    with build_gallery(emb, where.store, where.name(COLLECTION), kind="flat") as gallery:
        if keep is not None:
            gallery.remove(list(emb.ids[keep:]))
        assert len(gallery) == (len(emb.ids) if keep is None else keep)
    return where.store


def serve_store(served, tiny_export, store: str, *extra: object, collection: str = COLLECTION):
    args = ("--store", store, "--collection", collection, "--backend", "ort-cpu", "--k-max", K_MAX, *extra)
    return served(tiny_export / "model.onnx", None, *args)


@pytest.fixture(scope="module")
def queries(image_folder):
    return image_files(image_folder, 3)


@pytest.fixture(scope="module", params=ENGINES)
def where(request, tmp_path_factory) -> Where:
    """The module's gallery on Milvus Lite, or on the shared real Milvus server."""
    return milvus_testing.where(request.param, request, tmp_path_factory.mktemp("milvus_store"))


@pytest.fixture(scope="module")
def store(serve_embeddings, where) -> str:
    return build_store(serve_embeddings, None, where=where)


@pytest.fixture(scope="module")
def expected(store, where, tiny_export, queries) -> dict:
    """What `open_gallery` answers for the queries (read before the server holds the Lite file)."""
    from invspread_edge_runtime.milvus_store.address import parse_store
    from invspread_edge_runtime.milvus_store.gallery import open_gallery

    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as embedder:
        vectors, space_id = embedder.embed(queries), embedder.space_id
    with open_gallery(store, where.name(COLLECTION)) as gallery:
        result = gallery.search(vectors, k=K, space_id=space_id)
        found = {
            "records": result.records([q.name for q in queries]),
            "locations": result.locations,
            "space_id": gallery.space_id,
            "items": len(gallery),
            "shown": parse_store(store).shown,
            "collection": gallery.collection,
            "vectors": vectors,
        }
    return found


@pytest.fixture(scope="module")
def server(served, tiny_export, store, expected, image_folder):
    with serve_store(
        served, tiny_export, store, "--image-root", image_folder, collection=expected["collection"]
    ) as running:
        yield running


def test_info_and_readiness_show_the_store_and_collection(server, expected):
    assert expected["items"] == 40
    assert get(server.url, "/readyz").json() == {"status": "ready", "backend": "ort-cpu", "gallery": 40}
    gallery = get(server.url, "/v1/info").json()["gallery"]
    assert gallery == {
        "items": 40,
        "kind": "flat",
        "store": expected["shown"],
        "collection": expected["collection"],
        "consistency": "strong",
    }
    assert "gallery 40 items" in server.stderr()


def test_the_page_views_read_the_whole_collection(server, serve_embeddings):
    from invspread_edge_runtime.embeddings.reader import load_embeddings

    ids = set(load_embeddings(serve_embeddings).ids)
    duplicates = get(server.url, "/v1/duplicates?threshold=0.5").json()
    assert duplicates["items"] == 40 and duplicates["source"].startswith("collection ")
    assert {m["id"] for g in duplicates["groups"] for m in g["members"]} <= ids
    near = get(server.url, "/v1/map/neighbours?item=0&k=3").json()
    assert near["id"] in ids and len(near["neighbours"]) == 3


def test_search_by_image_equals_open_gallery_search(server, expected, queries, serve_index):
    reply = post_files(server.url, f"/v1/search?k={K}", [(q.name, q.read_bytes()) for q in queries])
    assert reply.status == 200, reply.body
    data = reply.json()
    assert data["k"] == K and data["space_id"] == expected["space_id"]
    for got, want, locations in zip(data["results"], expected["records"], expected["locations"], strict=True):
        assert got["query"] == want["query"]
        assert [(n["rank"], n["id"]) for n in got["neighbours"]] == [
            (n["rank"], n["id"]) for n in want["neighbours"]
        ]
        np.testing.assert_allclose(
            [n["score"] for n in got["neighbours"]], [n["score"] for n in want["neighbours"]], atol=1e-5
        )
        assert [n["path"] for n in got["neighbours"]] == [p or None for p in locations]
    # FLAT in Milvus is the exact search: the file index's exact top-k of the same embeddings
    exact = Index.load(serve_index).search(expected["vectors"], K)
    assert [[n["id"] for n in r["neighbours"]] for r in data["results"]] == exact.ids
    first = data["results"][1]["neighbours"][0]  # a gallery image finds itself, with its file
    assert first["path"] == str(queries[1]) and first["image"] == f"/v1/gallery/{first['id']}/image"
    image = get(server.url, first["image"])
    assert image.status == 200 and image.body == queries[1].read_bytes()


def test_concurrent_searches_share_the_one_client(server, expected, queries):
    body = [(queries[0].name, queries[0].read_bytes())]
    replies: list = []
    threads = [
        threading.Thread(target=lambda: replies.append(post_files(server.url, f"/v1/search?k={K}", body)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(replies) == 8 and {r.status for r in replies} == {200}
    want = [n["id"] for n in expected["records"][0]["neighbours"]]
    assert all([n["id"] for n in r.json()["results"][0]["neighbours"]] == want for r in replies)


def test_add_then_search_finds_it_and_delete_removes_it(server, queries, image_folder):
    image = image_files(image_folder, 4)[3]
    added = post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "new-1"})
    assert added.status == 201, added.body
    assert added.json() == {"id": "new-1", "items": 41}
    hits = post_files(server.url, "/v1/search?k=2", [(image.name, image.read_bytes())]).json()
    found = {n["id"]: n for n in hits["results"][0]["neighbours"]}
    assert "new-1" in found and found["new-1"]["score"] == pytest.approx(1.0, abs=1e-5)
    assert found["new-1"]["path"] is None and found["new-1"]["image"] is None  # an upload has no file
    taken = post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "new-1"})
    assert taken.status == 409 and "already in the gallery" in taken.error["message"]
    assert get(server.url, "/readyz").json()["gallery"] == 41

    assert call(server.url, "DELETE", "/v1/gallery/new-1").json() == {"id": "new-1", "items": 40}
    gone = call(server.url, "DELETE", "/v1/gallery/new-1")
    assert gone.status == 404 and "no gallery item has the id 'new-1'" in gone.error["message"]
    hits = post_files(server.url, "/v1/search?k=40", [(image.name, image.read_bytes())]).json()
    assert len(hits["results"][0]["neighbours"]) == 40
    assert "new-1" not in {n["id"] for n in hits["results"][0]["neighbours"]}
    assert get(server.url, "/v1/info").json()["gallery"]["items"] == 40
    assert "invedge_gallery_items 40.0" in get(server.url, "/metrics").body.decode()


def test_refusals_have_the_file_gallerys_statuses(server, expected, queries):
    data = queries[0].read_bytes()
    vector = expected["vectors"][0].tolist()
    too_many = post_files(server.url, "/v1/search?k=41", [("q.png", data)])  # k ≤ --k-max, > the gallery
    assert too_many.status == 422 and "but the gallery holds 40 items" in too_many.error["message"]
    assert post_files(server.url, "/v1/search?k=0", [("q.png", data)]).status == 422
    short = post_json(server.url, "/v1/search", {"vector": vector[:-1]})
    assert short.status == 422 and "dimension 31, the gallery 32" in short.error["message"]
    other = post_json(server.url, "/v1/search", {"vector": vector, "space_id": "another-space"})
    assert other.status == 409 and "another embedding space" in other.error["message"]
    unknown = call(server.url, "DELETE", "/v1/gallery/no-such-id")
    assert unknown.status == 404 and unknown.error["hint"]
    assert get(server.url, "/v1/gallery/no-such-id/image").status == 404
    assert get(server.url, "/readyz").json()["gallery"] == 40


def test_an_emptied_gallery_is_409_and_changes_persist_in_milvus(
    served, tiny_export, serve_embeddings, image_folder, tmp_path, capsys
):
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.gallery import open_gallery

    store = build_store(serve_embeddings, tmp_path, keep=1)
    embeddings = load_embeddings(serve_embeddings)
    last = embeddings.ids[0]
    image = image_files(image_folder, 1)[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    with open_gallery(store, COLLECTION) as gallery:  # a writer of the collection records any path it likes
        gallery.add(embeddings.vectors[:1], [last], embeddings.space_id, [str(secret)], source="a writer")
    with serve_store(served, tiny_export, store, "--image-root", image_folder) as server:
        refused = get(server.url, f"/v1/gallery/{last}/image")  # files.py's rule, as for an index file
        assert refused.status == 404 and "not under an --image-root" in refused.error["message"]
        assert call(server.url, "DELETE", f"/v1/gallery/{last}").json() == {"id": last, "items": 0}
        empty = post_files(server.url, "/v1/search?k=1", [(image.name, image.read_bytes())])
        assert empty.status == 409 and empty.error["message"] == "the gallery is empty"
        assert get(server.url, "/readyz").json()["gallery"] == 0
        # served, the Lite file is the server's: the CLI cannot open it (changes go through the API)
        assert invedge("index", "info", "--store", store, "--collection", COLLECTION) == 1
        err = capsys.readouterr().err
        assert "in use by another process" in err and err.count("\n") == 1, err
        added = post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "again"})
        assert added.status == 201 and added.json()["items"] == 1
    with open_gallery(store, COLLECTION) as gallery:  # the server stopped: Milvus holds what it wrote
        assert len(gallery) == 1 and gallery.contains(["again", last]) == {"again"}
        assert gallery.location("again") is None


@pytest.fixture(params=SERVERS)
def milvus_server(request, tmp_path):
    """A server of the test's own on a free loopback port: `milvus-lite server` (the Lite engine as a
    gRPC server) or the real Milvus server."""
    server = milvus_testing.own_server(request.param, tmp_path / "milvus")
    yield server
    server.kill()


def test_a_milvus_server_is_shared_and_its_loss_is_503(
    served, tiny_export, serve_embeddings, milvus_server, image_folder, monkeypatch
):
    """The remote path: another client's add is seen at once (nothing is cached in the service), a
    Milvus that went away is a 503 naming it, the service still running, and once it is back (its
    collection released, as after any restart) searches work again without restarting the service."""
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.build import build_gallery
    from invspread_edge_runtime.milvus_store.gallery import open_gallery

    store = milvus_server.store
    emb = load_embeddings(serve_embeddings)
    build_gallery(emb, store, COLLECTION).close()
    timeout = max(5, milvus_server.call_timeout_s)  # the server's calls give up within seconds
    monkeypatch.setenv("INVEDGE_MILVUS_TIMEOUT", str(timeout))
    with serve_store(served, tiny_export, store) as server:
        gallery_info = get(server.url, "/v1/info").json()["gallery"]
        assert gallery_info == {
            "items": 40,
            "kind": "flat",
            "store": store,
            "collection": COLLECTION,
            "consistency": "strong",
        }
        vector = {"vector": emb.vectors[0].tolist(), "space_id": emb.space_id}
        with open_gallery(store, COLLECTION) as gallery:  # another writer on the same Milvus
            gallery.add(emb.vectors[:1], ["by-another-client"], space_id=emb.space_id)
            assert get(server.url, "/readyz").json()["gallery"] == 41
            hits = post_json(server.url, "/v1/search?k=2", vector).json()["results"][0]["neighbours"]
            assert {n["id"] for n in hits} == {"by-another-client", emb.ids[0]}
            removed = call(server.url, "DELETE", "/v1/gallery/by-another-client")
            assert removed.json() == {"id": "by-another-client", "items": 40}
            assert gallery.contains(["by-another-client", emb.ids[0]]) == {emb.ids[0]}
        milvus_server.kill()
        lost = post_json(server.url, "/v1/search?k=2", vector)
        assert lost.status == 503 and lost.headers["retry-after"] == "1"
        assert f"cannot reach Milvus at {store}" in lost.error["message"]
        assert get(server.url, "/healthz").status == 200
        milvus_server.start()  # back on the same data and port: its collection comes back released
        deadline = time.monotonic() + 60  # a client retries 503s (Retry-After) until gRPC reconnects
        while (back := post_json(server.url, "/v1/search?k=2", vector)).status == 503:
            assert time.monotonic() < deadline, back.error
            time.sleep(0.5)
        assert back.status == 200, back.error
        assert back.json()["results"][0]["neighbours"][0]["id"] == emb.ids[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--index", "x.index", "--store", "milvus:x.db", "--collection", "c"), "not both"),
        ((), "No gallery to serve. Give --index FILE or --store S --collection C"),
        (("--store", "milvus:x.db"), "--collection is required with --store"),
        (("--collection", "c"), "--collection needs --store"),
        (("--index", "x.index", "--consistency", "bounded"), "--consistency needs --store"),
        (
            ("--store", "milvus:x.db", "--collection", "c", "--consistency", "often"),
            "--consistency 'often' is not a Milvus consistency level",
        ),
    ],
)
def test_the_gallery_flags_are_one_line(tiny_export, capsys, args, words):
    assert invedge("serve", tiny_export, "--port", "0", *args) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_a_bad_store_or_collection_or_another_models_space_is_one_line(
    tiny_export, serve_embeddings, make_tiny_onnx, tmp_path, capsys
):
    assert invedge("serve", tiny_export, "--store", "redis://x", "--collection", "c") == 1
    err = capsys.readouterr().err
    assert "redis://x" in err and err.count("\n") == 1, err
    store = build_store(serve_embeddings, tmp_path)
    assert invedge("serve", tiny_export, "--store", store, "--collection", "nothere", "-b", "ort-cpu") == 1
    err = capsys.readouterr().err
    assert "nothere" in err and err.count("\n") == 1, err
    other = make_tiny_onnx(tmp_path / "other.onnx")  # another model: another embedding space
    assert invedge("serve", other, "--store", store, "--collection", COLLECTION, "-b", "ort-cpu") == 1
    err = capsys.readouterr().err
    assert "come from another embedding space" in err and err.count("\n") == 1, err


def test_without_the_milvus_extra_the_error_names_it(tiny_export, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # `import pymilvus` fails as when not installed
    store = f"milvus:{tmp_path / 'g.db'}"
    assert invedge("serve", tiny_export, "--store", store, "--collection", COLLECTION, "-b", "ort-cpu") == 1
    err = capsys.readouterr().err
    assert "pymilvus" in err and "pip install 'invspread-edge-runtime[milvus]'" in err, err
    assert err.count("\n") == 1, err


def test_the_consistency_asked_is_the_one_searches_and_counts_use(serve_embeddings, tmp_path):
    """--consistency reaches every read that may wait for the server (searches and counts); the id
    checks of a write stay at the collection's Strong, so a taken id is refused whatever it says."""
    from invspread_edge_runtime.serve.store_gallery import StoreGallery

    store = build_store(serve_embeddings, tmp_path)
    with StoreGallery.open(store, COLLECTION, "Eventually") as served:
        gallery = served.current()
        asked: list[str] = []
        for name in ("search", "query"):
            call = getattr(gallery.client, name)

            def spy(*args, _call=call, **kwargs):
                asked.append(kwargs.get("consistency_level"))
                return _call(*args, **kwargs)

            setattr(gallery.client, name, spy)
        assert served.describe()["consistency"] == "eventually"
        vector = np.ones(gallery.dim, np.float32) / np.sqrt(gallery.dim)
        _, result = served.search(vector[None, :], K, gallery.space_id)
        assert len(result.ids[0]) == K and served.count() == 40
        assert asked and set(asked) == {"Eventually"}


def test_an_add_or_delete_answers_the_count_read_at_strong(serve_embeddings, tmp_path):
    """The `items` a 201 or a delete answers counts that write, whatever --consistency says; the
    other counts (/readyz, /v1/info) read at the service's level."""
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.serve.store_gallery import StoreGallery

    emb = load_embeddings(serve_embeddings)
    store = build_store(serve_embeddings, tmp_path)
    with StoreGallery.open(store, COLLECTION, "bounded") as served:
        client = served.current().client
        counted: list[str] = []
        query = client.query

        def spy(*args, **kwargs):
            if kwargs.get("output_fields") == ["count(*)"]:
                counted.append(kwargs.get("consistency_level"))
            return query(*args, **kwargs)

        client.query = spy
        assert served.add("added", emb.vectors[0], emb.space_id) == 41
        assert served.remove("added") == 40
        assert served.ready() == 40
        assert counted == ["Strong", "Strong", "Bounded"]
