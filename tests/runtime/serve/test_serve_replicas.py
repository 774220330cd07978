"""Two `invedge serve --store milvus://… --collection C` replicas on one collection, as behind a load
balancer: Milvus is the one holder of the gallery, so a change through either is what both answer at
once (an add found, a delete gone, the same count from /v1/info and /readyz), an id taken through one
is refused through the other, and a bounded mixed load over both answers no 5xx.

They run on the real Milvus server (`milvus_standalone`, Milvus 2.3 standalone); each test builds its
own collection (a unique name) on it and starts its own two replicas.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from milvus_testing import STANDALONE_GROUP, unique_collection
from serve_client import Reply, call, get, image_files, post_files, post_json

pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
pytestmark = pytest.mark.xdist_group(STANDALONE_GROUP)

ITEMS = 40  # serve_embeddings: the 40 test images
K = 5
LOAD_S = 5.0  # the load test's bound: this long (after one CYCLE each), or REQUESTS answered
REQUESTS = 240
CLIENTS = 8
CYCLE = ("search", "add", "embed", "delete", "vector", "ready", "add")  # each client's requests, in turn


@dataclass
class Pair:
    """Two replicas of one collection: `a`, `b` (each a conftest `Served`), its name and its store."""

    a: object
    b: object
    store: str
    collection: str

    def __iter__(self):
        return iter((self.a, self.b))


@pytest.fixture
def pair(served, tiny_export, serve_embeddings, milvus_standalone):
    """A fresh collection of the 40 test images and two replicas serving it."""
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.build import build_gallery

    store, collection = milvus_standalone.store, unique_collection("replicas")
    build_gallery(load_embeddings(serve_embeddings), store, collection, kind="flat").close()
    args = ("--store", store, "--collection", collection, "--backend", "ort-cpu")
    model = tiny_export / "model.onnx"
    with ThreadPoolExecutor(2) as pool:  # both start at once: each loads its model and opens the collection
        starting = [pool.submit(served, model, None, *args), pool.submit(served, model, None, *args)]
        a, b = (future.result() for future in starting)
    with a, b:
        yield Pair(a, b, store, collection)


def counts(pair: Pair) -> set[int]:
    """The gallery's size as each replica tells it, by /v1/info and by /readyz."""
    found = set()
    for server in pair:
        found.add(get(server.url, "/v1/info").json()["gallery"]["items"])
        ready = get(server.url, "/readyz")
        assert ready.status == 200, ready.body
        found.add(ready.json()["gallery"])
    return found


def found_ids(server, image: Path, k: int = K) -> dict[str, float]:
    reply = post_files(server.url, f"/v1/search?k={k}", [(image.name, image.read_bytes())])
    assert reply.status == 200, reply.body
    return {n["id"]: n["score"] for n in reply.json()["results"][0]["neighbours"]}


def add(server, item_id: str, image: Path) -> Reply:
    return post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": item_id})


def test_a_change_through_one_replica_is_seen_through_the_other(pair, image_folder):
    image = image_files(image_folder, 4)[3]
    a, b = pair
    assert counts(pair) == {ITEMS}
    info = get(b.url, "/v1/info").json()["gallery"]
    assert info == {
        "items": ITEMS,
        "kind": "flat",
        "store": pair.store,
        "collection": pair.collection,
        "consistency": "strong",
    }

    added = add(a, "through-a", image)
    assert added.status == 201 and added.json() == {"id": "through-a", "items": ITEMS + 1}
    hits = found_ids(b, image)  # no wait, no refresh: the other replica searches it at once
    assert hits["through-a"] == pytest.approx(1.0, abs=1e-5)
    assert counts(pair) == {ITEMS + 1}
    taken = add(b, "through-a", image)  # the id is taken through A: B asks Milvus, not a cache
    assert taken.status == 409 and "already in the gallery" in taken.error["message"]

    assert call(b.url, "DELETE", "/v1/gallery/through-a").json() == {"id": "through-a", "items": ITEMS}
    assert "through-a" not in found_ids(a, image, k=ITEMS)
    gone = call(a.url, "DELETE", "/v1/gallery/through-a")
    assert gone.status == 404 and "no gallery item has the id 'through-a'" in gone.error["message"]
    assert counts(pair) == {ITEMS}

    again = add(b, "through-a", image)  # a deleted id may be added again, through either
    assert again.status == 201 and found_ids(a, image)["through-a"] == pytest.approx(1.0, abs=1e-5)
    assert counts(pair) == {ITEMS + 1}
    assert f"invedge_gallery_items {ITEMS + 1}.0" in get(a.url, "/metrics").body.decode()


def test_one_id_added_through_both_at_once_is_one_item(pair, image_folder):
    """Two replicas may both find an id free and both write it: Milvus keeps one row of it (the
    last write wins), so the gallery grows by one and every later add of that id is refused."""
    images = image_files(image_folder, 6)[4:]
    for round_ in range(3):
        item_id = f"raced-{round_}"
        start = threading.Barrier(2)
        replies: dict[str, Reply] = {}

        def send(server, image: Path, name: str, item_id=item_id, start=start, replies=replies) -> None:
            start.wait()
            replies[name] = add(server, item_id, image)

        threads = [
            threading.Thread(target=send, args=(server, image, name))
            for server, image, name in zip(pair, images, "ab", strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = sorted(reply.status for reply in replies.values())
        assert statuses in ([201, 201], [201, 409]), [r.body for r in replies.values()]
        assert counts(pair) == {ITEMS + round_ + 1}
        for server in pair:
            assert add(server, item_id, images[0]).status == 409


@dataclass
class Tally:
    """What the load test's clients saw: statuses per operation, malformed answers, ids left added."""

    statuses: Counter = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, reply: Reply, problem: str | None) -> None:
        with self.lock:
            self.statuses[what, reply.status] += 1
            if problem is not None:
                self.malformed.append(f"{what} {reply.status}: {problem}: {reply.body[:200]!r}")


def problem_of(what: str, reply: Reply, dim: int) -> str | None:
    """Why an answer is not what its endpoint promises (None: it is)."""
    if reply.status >= 500:
        return "a server error"
    if "json" not in reply.headers.get("content-type", ""):
        return "not JSON"
    data = reply.json()
    if what == "embed":
        if reply.status != 200 or data["dim"] != dim or len(data["items"]) != 1:
            return "not one embedding"
        return None if len(data["items"][0]["embedding"]) == dim else "a vector of another size"
    if what in ("search", "vector"):
        if reply.status != 200 or data["k"] != K:
            return "not a top-k answer"
        hits = data["results"][0]["neighbours"]
        ranks = [n["rank"] for n in hits]
        return (
            None if ranks == list(range(1, K + 1)) and all("id" in n for n in hits) else "not k ranked hits"
        )
    if what == "ready":
        ready = reply.status == 200 and data["status"] == "ready" and isinstance(data["gallery"], int)
        return None if ready else "not ready with a count"
    wanted = {"add": 201, "delete": 200}[what]
    if reply.status != wanted or set(data) != {"id", "items"} or not isinstance(data["items"], int):
        return f"not {wanted} with id and items"
    return None


def query(what: str, url: str, image: Path, vector: dict) -> Reply:
    """An embed or a search by image, a search by vector, or the balancer's readiness probe."""
    if what == "ready":
        return get(url, "/readyz")
    if what == "vector":
        return post_json(url, f"/v1/search?k={K}", vector)
    path = "/v1/embed" if what == "embed" else f"/v1/search?k={K}"
    return post_files(url, path, [(image.name, image.read_bytes())])


def client(number: int, pair: Pair, images: list[Path], vector: dict, dim: int, tally: Tally, until: float):
    """One load client: its requests alternate between the replicas, in the order of CYCLE (an add
    is of an id no other client uses, a delete of the oldest id it added); one whole cycle at least,
    then more until its share of REQUESTS or the time bound."""
    replicas = list(pair)
    mine: list[str] = []
    try:
        for i in range(REQUESTS // CLIENTS):
            if i >= len(CYCLE) and time.monotonic() > until:
                break
            server, image = replicas[(number + i) % 2], images[(number + i) % len(images)]
            what = CYCLE[i % len(CYCLE)]
            if what == "delete":
                reply = call(server.url, "DELETE", f"/v1/gallery/{mine.pop(0)}")
            elif what == "add":
                mine.append(f"load-{number}-{i}")
                reply = add(server, mine[-1], image)
            else:
                reply = query(what, server.url, image, vector)
            tally.saw(what, reply, problem_of(what, reply, dim))
    except Exception as exc:  # a dropped connection, an answer that is not JSON: the test fails on it
        with tally.lock:
            tally.malformed.append(f"client {number}: {exc!r}")
    with tally.lock:
        tally.kept.update(mine)


def test_a_bounded_mixed_load_over_both_replicas_has_no_server_error(pair, serve_embeddings, image_folder):
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store.gallery import open_gallery

    emb = load_embeddings(serve_embeddings)
    vector = {"vector": emb.vectors[0].tolist(), "space_id": emb.space_id}
    images = image_files(image_folder, 8)
    tally = Tally()
    until = time.monotonic() + LOAD_S
    threads = [
        threading.Thread(target=client, args=(n, pair, images, vector, emb.dim, tally, until))
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)

    assert tally.malformed == []
    assert not [key for key in tally.statuses if key[1] >= 500]
    assert {what for what, _ in tally.statuses} == set(CYCLE), tally.statuses
    adds = sum(n for (what, _), n in tally.statuses.items() if what == "add")
    deletes = sum(n for (what, _), n in tally.statuses.items() if what == "delete")
    assert adds - deletes == len(tally.kept)
    assert counts(pair) == {ITEMS + len(tally.kept)}  # both replicas, both endpoints: one count
    every = [f"load-{n}-{i}" for n in range(CLIENTS) for i in range(REQUESTS // CLIENTS)]
    with open_gallery(pair.store, pair.collection) as gallery:  # what Milvus holds: exactly those kept
        assert len(gallery) == ITEMS + len(tally.kept)
        assert gallery.contains(every) == tally.kept
