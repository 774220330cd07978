"""`MilvusGallery`: a `Gallery` (the root gallery.py) whose only holder is a Milvus collection.

The interface and the rules of `index.gallery.Index` (the same checks and messages: the root
gallery.py's functions), plus where it lives and the state of its writes. Unlike the file index,
`add` upserts: an id already held is replaced, not refused, so re-adding the same embeddings (a
rerun after a dropped connection) is idempotent. Reads are Strong unless `consistency` says
otherwise: an add and then a search sees it, from any process. Nothing of the gallery is kept in this process but its properties.

Only a complete collection is opened for use (state.py: a build that stopped midway leaves an
incomplete one); `open_gallery(..., incomplete_ok=True)` opens any, for `index info`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import gallery as rules
from .. import hooks
from ..errors import IndexFileError
from ..gallery import Gallery, Where
from ..index.result import SearchResult
from ..index.settings import DEFAULT_K
from . import collection as schema
from . import state as records
from . import writes
from .address import StoreAddress, check_collection, parse_store
from .connect import call_timeout, connect, disconnect, failed
from .writes import batches

MISSING_SCORE = np.float32(-3.4028235e38)  # where fewer than k were found (as faiss answers)
LOAD_TRIES = 6  # 0.25 s doubling: 15 s in all
# Lite's messages for a segment (or its index file) read while still being written
PARTIAL_WRITE = ("not fully written", "No data left in file", "read error in")
INDEX_POLL_S = 0.25  # how often a server's index build is asked about
BUILD_TIMEOUT_S = 3600.0  # a load that builds the index (after a build or an add) may take this long


class MilvusGallery(Gallery):
    """A collection made by invedge; open with `open_gallery`, make with `build_gallery`."""

    format = schema.FORMAT

    def __init__(
        self,
        client: Any,
        store: StoreAddress,
        collection: str,
        meta: schema.Meta,
        dim: int,
        state: records.State | None = None,
    ) -> None:
        self.client, self.store, self.collection = client, store, collection
        self.meta, self.dim = meta, dim  # the collection's properties: kind, params, space, model, recall
        self.state = state or records.State()  # as read when opened (or as the build left it)
        self.notes: list[str] = []  # what a build tidied first (a stale temporary removed, a swap finished)
        self.consistency = "Strong"  # of searches and counts (schema.CONSISTENCY); writes check at Strong

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            disconnect(client, self.store)

    def __enter__(self) -> MilvusGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what it holds ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.count()

    def count(self, consistency: str | None = None) -> int:
        """The items held, read at `consistency` (schema.CONSISTENCY's values; default: the gallery's):
        Strong sees every write made before the call, this process's and others'."""
        level = consistency or self.consistency
        rows = self._call(
            "count items",
            lambda t: self.client.query(
                self.collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level=level,
                timeout=t,
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def params(self) -> dict[str, Any]:
        return self.meta.params

    @property
    def space(self) -> dict[str, Any]:
        return self.meta.space

    @property
    def model(self) -> dict[str, Any]:
        return self.meta.model

    @property
    def recall_at_10(self) -> float | None:
        return self.meta.recall_at_10

    def where(self) -> Where:
        """The collection in its store (as shown: never a token)."""
        shown, collection = self.store.shown, self.collection
        return Where(
            f"{collection} in {shown}",
            f"--store {shown} --collection {collection}",
            {"store": shown, "collection": collection},
        )

    def info(self) -> dict[str, Any]:
        """`Gallery.info()`, plus where the gallery lives, whether its build finished, and the
        writes into it that stopped midway (each with the command that finishes it)."""
        facts = super().info()
        return (
            facts
            | self.where().facts
            | {
                "complete": self.state.complete,
                "status": records.status(self.state, self.store, self.collection, facts["count"]),
                "stopped_writes": self.stopped_writes(),
            }
        )

    def check_complete(self) -> None:
        """Refuse a collection whose build has not finished (or a temporary), with the next step."""
        records.check_usable(
            self.state, self.store, self.collection, self.kind, self.params, lambda: len(self)
        )

    def stopped_writes(self) -> list[str]:
        """A line for each write into this collection that stopped midway, with how to finish it."""
        return records.stopped_writes(self.state, self.store, self.collection, self.kind, self.params)

    def temporaries(self) -> list[str]:
        """The temporaries of this collection that builds left (or are writing), one line each."""
        found = records.temporaries(
            self.client, self.store, self.collection, lambda name: _description(self.client, self.store, name)
        )
        return [records.leftover(name, state, self.store, self.collection) for name, state in found]

    def contains(self, ids: list[str]) -> set[str]:
        """Those of `ids` the collection holds."""
        held: set[str] = set()
        for part in batches(len(ids)):
            chunk = list(ids[part])
            held |= self._call(
                "look up ids", lambda t, c=chunk: writes.held_ids(self.client, self.collection, c, t)
            )
        return held

    def location(self, item_id: str) -> str | None:
        """The image file recorded for `item_id` (None when unknown or not held)."""
        rows = self._call(
            "look up an item",
            lambda t: self.client.get(self.collection, ids=[item_id], output_fields=["location"], timeout=t),
        )
        return (rows[0].get("location") or None) if rows else None

    def iter_ids(self, batch: int = writes.BATCH) -> Iterator[str]:
        """Every id held (for `index info --ids`), read in batches."""
        iterator = self._call(
            "list ids",
            lambda t: self.client.query_iterator(
                self.collection, batch_size=batch, output_fields=["id"], timeout=t
            ),
        )
        try:
            while rows := self._call("list ids", lambda t: iterator.next()):
                yield from (row["id"] for row in rows)
        finally:
            iterator.close()

    def iter_items(self, batch: int = writes.BATCH) -> Iterator[tuple[str, list[float], str]]:
        """Every item held as (id, vector, location), read in pages with a query iterator (the
        explore verbs read a whole collection this way; memory: one page at a time here)."""
        iterator = self._call(
            "read items",
            lambda t: self.client.query_iterator(
                self.collection, batch_size=batch, output_fields=["id", "vector", "location"], timeout=t
            ),
        )
        try:
            while rows := self._call("read items", lambda t: iterator.next()):
                yield from ((row["id"], row["vector"], row.get("location") or "") for row in rows)
        finally:
            iterator.close()

    # --- search --------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int = DEFAULT_K, space_id: str | None = None, exact: bool = False
    ) -> SearchResult:
        """Top-k items for each query row, answered by Milvus; the same rules as `Index.search`
        (space and dimension before any call to Milvus). The count that `check_k` needs is asked
        only when the answer falls short of k (or for an exact search, whose ef it sets): each read
        of a server waits for Milvus' time tick (Strong), so a search costs one read, not two."""
        self.check_space(space_id)
        queries = rules.check_queries(queries, self.dim)
        count = len(self) if exact or k < 1 else None
        if count is not None:
            rules.check_k(k, count)
        params = schema.search_params(self.kind, self.params, k, exact, count or 0)
        hits = self._call(
            "search",
            lambda t: self.client.search(
                self.collection,
                data=list(queries),
                limit=k,
                anns_field="vector",
                search_params=params,
                output_fields=["location"],
                consistency_level=self.consistency,
                timeout=t,
            ),
        )
        result = _result(hits, k, f"milvus-{self.kind}")
        if result.short and count is None:  # fewer than k found: the gallery may hold fewer than k
            rules.check_k(k, len(self))
        if result.short:
            result.notes.append(self._short_note(result))
        return result

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall in this process's searches (the stored params stay)."""
        if nprobe is not None and self.kind == "ivf":
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None and self.kind == "hnsw":
            self.params["ef_search"] = int(ef_search)

    def follow_backend(self, info: Any) -> str | None:
        """Never moves: Milvus searches on its own servers."""
        return "Milvus searches on its own servers"

    def _short_note(self, result: SearchResult) -> str:
        knob = (
            f"--nprobe (now {self.params.get('nprobe')} of {self.params.get('nlist')} lists)"
            if self.kind == "ivf"
            else f"--ef-search (now {self.params.get('ef_search')})"
        )
        queries = len(result.found)
        return (
            f"{result.short} of {queries} quer{'y' if queries == 1 else 'ies'} found fewer than "
            f"k = {result.k} neighbours (fewest: {int(result.found.min())}) in this {self.kind} "
            f"collection. Raise {knob}, or pass --exact"
        )

    # --- changes -------------------------------------------------------------------------------

    def add(
        self,
        vectors: np.ndarray,
        ids: list[str],
        space_id: str | None = None,
        locations: list[str] | None = None,
        source: str = "the new items",
        on_progress: Callable[[int, int], None] | None = None,
        recorded: bool = False,
        upsert: bool = True,
    ) -> int:
        """Upsert items in batches (an id held is replaced, not refused); returns how many were new.

        `recorded` (the CLI's adds of a folder `source`): a record while it writes, so that a kill
        leaves a trace `index info` shows, which the rerun of the same add clears. `upsert=False`:
        an id held is refused (DuplicateIdsError), as the file index does, once space and dimension
        are checked (those need no call to Milvus)."""
        self.check_space(space_id, adding=source)
        ids = list(ids)
        vectors = rules.check_new_items(vectors, ids, self.dim, source)
        if not upsert:
            rules.check_not_held(ids, self.contains(ids), source)
        locations = rules.copy_locations(locations, ids)
        schema.check_fits(ids, locations)
        self._check_new_locations(ids, locations, source)
        folder = os.path.abspath(source) if recorded else source  # the same add from any folder is known
        with self._recording(recorded, "add", source=folder, total=len(ids)):
            new = writes.upsert(
                self.client,
                self.store,
                self.collection,
                vectors,
                ids,
                locations,
                count_new=upsert,  # else every id was just found new: no second look-up
                on_progress=on_progress,
            )
        if recorded:
            self._drop_stopped(lambda w: w.doing == "add" and w.source == folder)
        return new if upsert else len(ids)

    def remove(self, ids: list[str], recorded: bool = False) -> int:
        """Delete items by id; unknown ids are an error (nothing is removed then). Returns the count.

        `recorded` (the CLI's removes): a record while it deletes; the rerun of a remove that stopped
        midway (the same ids) deletes what is left, the ids already gone are no error then."""
        wanted = list(dict.fromkeys(ids))
        missing = set(wanted) - self.contains(wanted)
        digest = records.ids_digest(wanted)
        finishing = recorded and any(
            w.doing == "remove" and w.ids_sha256 == digest for w in self.state.stopped(self.store)
        )
        if missing and not finishing:
            raise rules.unknown_ids(missing)
        present = [item for item in wanted if item not in missing]
        with self._recording(recorded, "remove", total=len(wanted), ids_sha256=digest):
            for part in batches(len(present)):
                chunk = present[part]
                self._call(
                    "remove items", lambda t, c=chunk: self.client.delete(self.collection, ids=c, timeout=t)
                )
                hooks.reached("milvus-remove")
        if recorded:
            self._drop_stopped(lambda w: w.doing == "remove" and w.ids_sha256 == digest)
        return len(present)

    def _recording(self, recorded: bool, doing: str, **details: Any) -> contextlib.AbstractContextManager:
        if not recorded:
            return contextlib.nullcontext()
        return records.Recording(self.client, self.store, self.collection, doing, **details)

    def _drop_stopped(self, match: Callable[[records.Writer], bool]) -> None:
        records.drop_stopped(self.client, self.store, self.collection, self.state, match)
        self.state.writers = [w for w in self.state.writers if w.alive(self.store) or not match(w)]

    def _check_new_locations(self, ids: list[str], locations: list[str], source: str) -> None:
        """Refuse an image file held under another id (two folders that overlap), as the file index does."""
        again: list[tuple[str, str]] = []
        for part in batches(len(ids), 500):
            wanted = {loc: item for item, loc in zip(ids[part], locations[part], strict=True) if loc}
            if not wanted:
                continue
            # a literal list: Milvus Lite has no filter templates; JSON escapes " and \\ as Milvus reads them
            expression = f"location in [{', '.join(json.dumps(loc, ensure_ascii=False) for loc in wanted)}]"
            rows = self._call(
                "look up image files",
                lambda t, e=expression: self.client.query(
                    self.collection,
                    filter=e,
                    output_fields=["id", "location"],
                    timeout=t,
                ),
            )
            again += [
                (wanted[row["location"]], row["id"]) for row in rows if wanted[row["location"]] != row["id"]
            ]
        if again:
            raise rules.locations_held(again, source)

    def _call(self, what: str, call: Callable[[float], Any]) -> Any:
        """One Milvus call with the call timeout; its failure as one line naming the store."""
        if self.client is None:
            raise IndexFileError(f"the gallery {self.collection} in {self.store.shown} is closed")
        try:
            return call(call_timeout())
        except Exception as exc:
            if not _released(exc):
                raise failed(self.store, what, exc) from exc
        load(self.client, self.store, self.collection)  # a restarted server comes back with it released
        try:
            return call(call_timeout())
        except Exception as exc:
            raise failed(self.store, what, exc) from exc


def open_gallery(store: str | StoreAddress, collection: str, incomplete_ok: bool = False) -> MilvusGallery:
    """The gallery `collection` in `store`; IndexFileError when missing, not made by invedge, or
    incomplete (a build that stopped midway; LockedError while one builds it) unless `incomplete_ok`."""
    address = parse_store(store) if isinstance(store, str) else store
    check_collection(collection)
    client = connect(address)
    try:
        held = describe(client, address, collection)
        load(client, address, collection)
        gallery = MilvusGallery(client, address, collection, held.meta, held.dim, held.state)
        if not incomplete_ok:
            gallery.check_complete()
    except BaseException:
        disconnect(client, address)
        raise
    return gallery


def _released(exc: BaseException) -> bool:
    """Milvus refused because the collection is not loaded (after a server restart)."""
    text = str(exc).lower()
    return "released" in text or "not loaded" in text


@dataclass
class Described:
    """A collection made by invedge: its settings, vector dimension, and the state of its writes."""

    meta: schema.Meta
    dim: int
    state: records.State


def describe(client: Any, store: StoreAddress, collection: str) -> Described:
    try:
        exists = client.has_collection(collection, timeout=call_timeout())
    except Exception as exc:
        raise failed(store, "list collections", exc) from exc
    if not exists:
        raise _missing(client, store, collection)
    description = _description(client, store, collection)
    meta, dim = schema.read_meta(description, store, collection)
    return Described(meta, dim, records.read_state(description.get("properties") or {}))


def _description(client: Any, store: StoreAddress, collection: str) -> dict[str, Any]:
    try:
        return client.describe_collection(collection, timeout=call_timeout())
    except Exception as exc:
        raise failed(store, f"describe {collection}", exc) from exc


def _missing(client: Any, store: StoreAddress, collection: str) -> IndexFileError:
    """No such collection: the build command, or what a build that replaced it left (its temporaries)."""
    left = records.temporaries(client, store, collection, lambda name: _description(client, store, name))
    if not left:
        return IndexFileError(
            f"no collection {collection} in {store.shown}",
            f"Build it with 'invedge index build EMB --store {store.shown} --collection {collection}'",
        )
    source = next((state.source for _, state in left if state.source), "EMB")
    return IndexFileError(
        f"no collection {collection} in {store.shown}: a build that replaced it stopped midway, leaving "
        f"{', '.join(name for name, _ in left)}",
        f"Rerun it ('invedge index build {source} --store {store.shown} --collection {collection} "
        "--overwrite'): it puts the collection back first",
    )


def load(client: Any, store: StoreAddress, collection: str, refresh: bool = False) -> None:
    """Load the collection for search when it is not (a Lite file reopened, a server restarted).

    `refresh`: reload it, so that the index covers rows just written (Milvus Lite searches rows of
    an unsealed segment exhaustively until the collection is loaded again; a Milvus server serves
    flushed rows through an interim index until its own build has ended and the collection is
    loaded again: `_wait_indexed`).
    """
    timeout = call_timeout()
    if refresh:  # loading builds the index over every row: minutes for HNSW at 100k rows on 2 cores
        timeout = max(timeout, BUILD_TIMEOUT_S)
    try:
        if refresh:
            client.flush(collection, timeout=timeout)
            _wait_indexed(client, collection, timeout)
            client.release_collection(collection, timeout=timeout)
        state = client.get_load_state(collection, timeout=timeout).get("state")
        if refresh or "Loaded" not in str(state):
            _load_settled(client, collection, timeout)
    except Exception as exc:
        raise failed(store, f"load {collection}", exc) from exc


def _wait_indexed(client: Any, collection: str, timeout: float) -> None:
    """Wait until the index covers every flushed row, as the server reports it.

    A Milvus server builds the index of flushed segments in the background, and until that build
    has ended and the collection is loaded again, it searches them with an interim index of its own
    whatever ef or nprobe asks (recall@10 0.39 for an HNSW at 50 000 rows): recall measured or tuned
    then would be that index's. Milvus Lite builds at load and reports nothing pending. A segment
    under Milvus' index threshold (dataCoord.segment.minSegmentNumRowsToEnableIndex, 1024 rows) and
    every segment of a FLAT index get no build: Milvus 2.3 marks them done on its index builder's
    next round (about a second), so a small gallery waits that long at most.
    """
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_index(collection, "vector", timeout=call_timeout()) or {}
        if str(described.get("state", "")) == "Failed":
            raise RuntimeError("the server's index build failed (its log says why)")
        pending = int(described.get("pending_index_rows") or 0)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{pending} rows were still waiting for their index after {timeout:g} s")
        time.sleep(INDEX_POLL_S)


def _load_settled(client: Any, collection: str, timeout: float) -> None:
    """`load_collection`, again while Milvus Lite is still writing the segments a flush started.

    Milvus Lite 3 compacts flushed segments in a background thread; a load that meets a segment file
    still being written fails with "file seems not fully written" (seen at 100k rows right after a
    flush) or, a moment earlier in the same write, "No data left in file" (seen once in CI, on a
    rebuild of 2 000 rows), and an index file read short, faiss' "read error in FILE: N != M" (seen
    once in CI, on an IVF build). Nothing is lost: the load is retried once the writing has had time
    to end.
    """
    for attempt in range(LOAD_TRIES):
        try:
            client.load_collection(collection, timeout=timeout)
            return
        except Exception as exc:
            if not any(m in str(exc) for m in PARTIAL_WRITE) or attempt == LOAD_TRIES - 1:
                raise
            time.sleep(0.25 * 2**attempt)


def _result(hits: Any, k: int, searcher: str) -> SearchResult:
    """Milvus' hits as a SearchResult: the hits flattened are its gallery, `indices` point into them."""
    scores = np.full((len(hits), k), MISSING_SCORE, dtype=np.float32)
    indices = np.full((len(hits), k), -1, dtype=np.int64)
    ids: list[str] = []
    locations: list[str] = []
    for q, row in enumerate(hits):
        for r, hit in enumerate(list(row)[:k]):
            entity = hit.get("entity") or {}
            scores[q, r] = float(hit["distance"])
            indices[q, r] = len(ids)
            ids.append(str(hit["id"]))
            locations.append(entity.get("location") or "")
    return SearchResult(scores, indices, ids, locations, searcher)
