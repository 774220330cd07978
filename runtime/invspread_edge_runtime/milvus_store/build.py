"""`build_gallery`: an embeddings folder into a Milvus collection, measured and tuned like the file index.

A collection that exists with the same embedding space, kind and build parameters is upserted into
(a rebuild is idempotent); another one is refused unless `overwrite`. With `overwrite` the new
gallery is built whole under a temporary name and swapped in by renames (rename_collection: Milvus
Lite 3 and Milvus 2.2+ both have it) only once complete: the old one serves until then, and is
dropped after. Between the two renames the name is missing for a moment (milliseconds).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import IndexFileError
from ..index.faiss_engines import FaissAnn
from ..index.items import as_matrix, check_unique
from ..index.settings import EF_CONSTRUCTION, HNSW_M, KINDS
from . import collection as schema
from . import tuning, writes
from .address import COLLECTION_MAX, StoreAddress, check_collection, parse_store
from .connect import call_timeout, connect, disconnect, failed, pymilvus_module
from .gallery import MilvusGallery, describe, load


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
    client = connect(address)
    try:
        existing = describe(client, address, collection) if _exists(client, address, collection) else None
        if existing is not None and nlist is None and existing[0].kind == kind == "ivf":
            nlist = existing[0].params.get("nlist")  # the same lists: an idempotent rebuild
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
            _check_same(existing[0], meta, address, collection)
        elif existing is not None:
            target = _temporary(collection)
        if target != collection or existing is None:
            _create(client, address, target, meta, vectors.shape[1])
        else:
            load(client, address, target)
        gallery = MilvusGallery(client, address, target, meta, vectors.shape[1])
        try:
            writes.upsert(client, address, target, vectors, ids, locations, on_progress=on_progress)
            load(client, address, target, refresh=True)  # the index over every row, before measuring
            if kind != "flat":
                given = nprobe is not None if kind == "ivf" else ef_search is not None
                meta.recall_at_10 = (
                    tuning.measure_recall(gallery, vectors, ids)
                    if given
                    else tuning.tune(gallery, vectors, ids)
                )
            _store_meta(client, address, target, meta)
            if target != collection:
                _swap(client, address, target, collection)
                gallery.collection = collection
                load(client, address, collection)
        except BaseException:
            if target != collection:
                _drop_quietly(client, target)
            raise
    except BaseException:
        disconnect(client, address)
        raise
    return gallery


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


def _create(client: Any, store: StoreAddress, name: str, meta: schema.Meta, dim: int) -> None:
    pymilvus = pymilvus_module()
    try:
        client.create_collection(
            name,
            schema=schema.schema(pymilvus, client, dim),
            index_params=schema.index_params(client, meta),
            consistency_level="Strong",
            properties=meta.properties(),
            timeout=call_timeout(),
        )
    except Exception as exc:
        raise failed(store, f"create collection {name}", exc) from exc
    load(client, store, name)


def _store_meta(client: Any, store: StoreAddress, name: str, meta: schema.Meta) -> None:
    try:
        client.alter_collection_properties(name, properties=meta.properties(), timeout=call_timeout())
    except Exception as exc:
        raise failed(store, f"record the gallery's settings on {name}", exc) from exc


def _temporary(collection: str, tag: str = "new") -> str:
    suffix = f"__invedge_{tag}_{secrets.token_hex(4)}"
    return collection[: COLLECTION_MAX - len(suffix)] + suffix


def _swap(client: Any, store: StoreAddress, new: str, collection: str) -> None:
    """`new` becomes `collection`; the old `collection` is dropped once it has been replaced."""
    aside = _temporary(collection, "old")
    timeout = call_timeout()
    try:
        client.rename_collection(collection, aside, timeout=timeout)
    except Exception as exc:
        raise failed(store, f"move {collection} aside", exc) from exc
    try:
        client.rename_collection(new, collection, timeout=timeout)
    except Exception as exc:
        with contextlib.suppress(Exception):  # put the old one back: the name never stays empty
            client.rename_collection(aside, collection, timeout=timeout)
        raise failed(store, f"rename {new} to {collection}", exc) from exc
    _drop_quietly(client, aside)


def _drop_quietly(client: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # a leftover is named by its prefix, harmless
        client.drop_collection(name, timeout=call_timeout())
