"""`build_gallery`: an embeddings folder into a Milvus collection, measured and tuned like the file index.

A collection that exists with the same embedding space, kind and build parameters is upserted into
(a rebuild is idempotent); another one is refused unless `overwrite`. With `overwrite` the new
gallery is built whole under a temporary name and swapped in by renames (rename_collection: Milvus
Lite 3 and Milvus 2.2+ both have it) only once complete: the old one serves until then, and is
dropped after. Between the two renames the name is missing for a moment (milliseconds).

What a kill leaves (state.py records it): a first build stopped midway leaves an incomplete
collection, which nothing opens for use; rerunning the same build finishes it (upserts are
idempotent). An `--overwrite` stopped midway leaves the old collection whole and a temporary;
every build of the collection first drops the temporaries whose writer is gone, after putting the
collection back when a kill fell between the swap's two renames. On a Milvus server, a build that
another process is writing (its record alive) is not touched: the second build is refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import hooks
from ..errors import IndexFileError, LockedError
from ..gallery import as_matrix, check_unique
from ..index.faiss_engines import FaissAnn
from ..index.settings import EF_CONSTRUCTION, HNSW_M, KINDS
from . import collection as schema
from . import state as records
from . import tuning, writes
from .address import StoreAddress, check_collection, parse_store
from .connect import call_timeout, connect, disconnect, failed, pymilvus_module
from .gallery import Described, MilvusGallery, describe, load


def build_gallery(
    embeddings: Any,
    store: str | StoreAddress,
    collection: str,
    kind: str = "flat",
    *,
    m: int = HNSW_M,
    ef_construction: int = EF_CONSTRUCTION,
    ef_search: int | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> MilvusGallery:
    """The gallery `collection` in `store` holding `embeddings` (an `embeddings.EmbeddingSet`)."""
    if kind not in KINDS:
        raise IndexFileError(f"Invalid index kind {kind!r}. Only {', '.join(KINDS)} are supported.")
    address = parse_store(store) if isinstance(store, str) else store
    check_collection(collection)
    vectors = as_matrix(np.asarray(embeddings.vectors, dtype=np.float32))
    ids, locations = list(embeddings.ids), list(embeddings.locations())
    if len(vectors) == 0:
        raise IndexFileError("the gallery is empty: nothing to index", "Embed some images first")
    check_unique(ids)
    space = dict(embeddings.space)
    if vectors.shape[1] != int(space.get("embedding_dim", vectors.shape[1])):
        raise IndexFileError(
            f"vectors have dimension {vectors.shape[1]}, the space says {space['embedding_dim']}"
        )
    schema.check_fits(ids, locations)
    source = _source(embeddings)
    client = connect(address)
    try:
        notes = _tidy(client, address, collection)
        existing = describe(client, address, collection) if _exists(client, address, collection) else None
        if existing is not None:
            _check_not_written(existing, address, collection)
        if existing is not None and nlist is None and existing.meta.kind == kind == "ivf":
            nlist = existing.meta.params.get("nlist")  # the same lists: an idempotent rebuild
        params = _params(
            kind,
            len(vectors),
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            nlist=nlist,
            nprobe=nprobe,
        )
        meta = schema.Meta(kind, params, space, dict(embeddings.manifest.get("model", {})))
        target = collection
        if existing is not None and not overwrite:
            _check_same(existing.meta, meta, address, collection)
            _check_resumable(existing, source, address, collection)
        elif existing is not None:
            target = records.temporary_name(collection, "new")
        if target != collection or existing is None:
            marks = records.building(len(ids), source)
            if target != collection:
                marks |= records.temporary(collection, "new")
            _create(client, address, target, meta, vectors.shape[1], marks)
        else:
            load(client, address, target)
        gallery = MilvusGallery(client, address, target, meta, vectors.shape[1])
        gallery.notes = notes
        try:
            with records.Recording(client, address, target, "build", source=source, total=len(ids)) as writer:
                writes.upsert(client, address, target, vectors, ids, locations, on_progress=on_progress)
                load(client, address, target, refresh=True)  # the index over every row, before measuring
                if kind != "flat":
                    given = nprobe is not None if kind == "ivf" else ef_search is not None
                    meta.recall_at_10 = (
                        tuning.measure_recall(gallery, vectors, ids)
                        if given
                        else tuning.tune(gallery, vectors, ids)
                    )
                _store_meta(client, address, target, meta, records.finished(len(ids), source))
                if target != collection:
                    _swap(client, address, target, collection, writer)
                    gallery.collection = collection
                    load(client, address, collection)
        except BaseException:
            if target != collection:
                _drop_quietly(client, target)
            raise
        others: list[records.Writer] = []  # what stopped in the collection kept: its adds and removes
        if existing is not None and target == collection:  # the builds of it that stopped: redone
            records.drop_stopped(client, address, collection, existing.state, lambda w: w.doing == "build")
            others = [w for w in existing.state.writers if w.doing != "build"]
        gallery.state = records.State({"state": "complete", "total": len(ids), "source": source}, others)
    except BaseException:
        disconnect(client, address)
        raise
    return gallery


def _source(embeddings: Any) -> str:
    """The embeddings folder, as the rerun of a stopped build names it ("" for vectors from memory)."""
    path = getattr(embeddings, "path", None)
    return os.path.abspath(path) if path else ""


def _tidy(client: Any, store: StoreAddress, collection: str) -> list[str]:
    """Before a build: finish a swap that a kill cut short, drop the temporaries whose writer is gone.

    Returns a line for each thing done. LockedError when another process is building `collection`
    under a temporary name now (on a server; a Milvus Lite folder is open in one process)."""
    left = records.temporaries(
        client, store, collection, lambda name: client.describe_collection(name, timeout=call_timeout())
    )
    live = [(name, state.live(store)[0]) for name, state in left if state.live(store)]
    if live:
        name, writer = live[0]
        raise LockedError(
            f"collection {collection} in {store.shown} is being rebuilt by another process "
            f"({writer.who()}, into {name})",
            "Wait for that build to finish, then retry",
        )
    notes = []
    if left and not _exists(client, store, collection):
        name = _swapped_in(left)
        _rename(client, store, name, collection)
        records.drop_properties(client, collection, [records.TEMPORARY])
        notes.append(f"put {collection} back from {name} (a build stopped while swapping it in)")
        left = [(n, s) for n, s in left if n != name]
    for name, _ in left:
        _drop_quietly(client, name)
        notes.append(f"removed {name}, left by a build of {collection} that stopped")
    return notes


def _swapped_in(left: list[tuple[str, records.State]]) -> str:
    """Which temporary becomes the collection again: the complete new one, else the old one."""
    for role in ("new", "old"):
        for name, state in left:
            if (state.temporary or {}).get("role") == role and state.complete:
                return name
    return left[0][0]


def _check_not_written(existing: Described, store: StoreAddress, collection: str) -> None:
    """Refuse while another process builds `collection` itself (on a server)."""
    live = existing.state.live(store, "build")
    if live:
        raise LockedError(
            f"collection {collection} in {store.shown} is being built by another process ({live[0].who()})",
            "Wait for that build to finish, then retry",
        )


def _check_resumable(existing: Described, source: str, store: StoreAddress, collection: str) -> None:
    """An incomplete collection is finished by its own embeddings only: others would mix with its rows."""
    held = existing.state
    if held.complete or not held.source or not source or held.source == source:
        return
    raise IndexFileError(
        f"collection {collection} in {store.shown} is incomplete: its build from {held.source} stopped "
        f"midway, and {source} is another folder",
        f"Rerun that build to finish it, or pass --overwrite to build {collection} from {source}",
    )


def _params(kind: str, count: int, **given: Any) -> dict[str, Any]:
    """The kind's parameters as the file index chooses them (faiss_engines.FaissAnn.settings)."""
    if kind == "flat":
        return {}
    ef_search = given.pop("ef_search")
    params = FaissAnn.settings(kind, count, **given, **({"ef_search": ef_search} if ef_search else {}))
    params.pop("seed", None)
    if kind == "ivf":
        params["nlist"] = min(int(params["nlist"]), count)
        params["nprobe"] = min(int(params["nprobe"]), params["nlist"])
    return params


def _check_same(held: schema.Meta, new: schema.Meta, store: StoreAddress, collection: str) -> None:
    if held.space_id != new.space_id:
        why = f"embeddings of another embedding space ({held.space_id}, not {new.space_id})"
    elif held.kind != new.kind:
        why = f"a {held.kind} gallery, not {new.kind}"
    elif held.build_params != new.build_params:
        shown = ", ".join(f"{k}={v}" for k, v in held.build_params.items())
        why = f"a {held.kind} gallery with other parameters ({shown})"
    else:
        return
    raise IndexFileError(
        f"collection {collection} in {store.shown} already holds {why}",
        "Pass --overwrite to replace it (the old one serves until the new one is complete)",
    )


def _exists(client: Any, store: StoreAddress, name: str) -> bool:
    try:
        return bool(client.has_collection(name, timeout=call_timeout()))
    except Exception as exc:
        raise failed(store, "list collections", exc) from exc


def _create(
    client: Any, store: StoreAddress, name: str, meta: schema.Meta, dim: int, marks: dict[str, str]
) -> None:
    """Create the collection, marked as being built (state.py) from its first moment."""
    pymilvus = pymilvus_module()
    try:
        client.create_collection(
            name,
            schema=schema.schema(pymilvus, client, dim),
            index_params=schema.index_params(client, meta),
            consistency_level="Strong",
            properties=meta.properties() | marks,
            timeout=call_timeout(),
        )
    except Exception as exc:
        raise failed(store, f"create collection {name}", exc) from exc
    load(client, store, name)


def _store_meta(client: Any, store: StoreAddress, name: str, meta: schema.Meta, done: dict[str, str]) -> None:
    """The measured settings and the mark of a complete build, in one call: the last of a build."""
    try:
        client.alter_collection_properties(name, properties=meta.properties() | done, timeout=call_timeout())
    except Exception as exc:
        raise failed(store, f"record the gallery's settings on {name}", exc) from exc


def _swap(client: Any, store: StoreAddress, new: str, collection: str, writer: records.Recording) -> None:
    """`new` becomes `collection`; the old `collection` is dropped once it has been replaced.

    The old one is marked a temporary (with this build's record) before it moves aside, so that a
    kill between the two renames leaves two temporaries that the next build tells apart."""
    aside = records.temporary_name(collection, "old")
    marks = records.temporary(collection, "old") | {writer.writer.key: writer.writer.text()}
    records.set_properties(client, store, collection, marks)
    try:
        _rename(client, store, collection, aside)
    except BaseException:
        with contextlib.suppress(Exception):  # still the complete collection: no stale marks on it
            records.drop_properties(client, collection, list(marks))
        raise
    hooks.reached("milvus-swap")
    try:
        _rename(client, store, new, collection)
    except BaseException:
        with contextlib.suppress(Exception):  # put the old one back: the name never stays empty
            client.rename_collection(aside, collection, timeout=call_timeout())
            records.drop_properties(client, collection, list(marks))
        raise
    writer.moved(collection)
    records.drop_properties(client, collection, [records.TEMPORARY])
    _drop_quietly(client, aside)


def _rename(client: Any, store: StoreAddress, old: str, new: str) -> None:
    try:
        client.rename_collection(old, new, timeout=call_timeout())
    except Exception as exc:
        raise failed(store, f"rename {old} to {new}", exc) from exc


def _drop_quietly(client: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # a leftover is named by its prefix, harmless
        client.drop_collection(name, timeout=call_timeout())
