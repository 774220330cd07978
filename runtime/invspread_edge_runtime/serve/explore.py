"""The page's Map and Duplicates views of the served gallery: GET /v1/map, /v1/map/neighbours and
/v1/duplicates (docs/SERVE_API.md).

The map is the gallery's 2-D layout (explore.layout2d: UMAP where installed, cached on disk per
embeddings checksum), coloured by class folder or a quick k-means, in the data shape the map script
(explore/static/map.js) draws; a clicked point's neighbours are asked of /v1/map/neighbours. Both
views are computed once per gallery as it is and kept (`ExploreViews`): a change of the gallery
(an add or delete here, `invedge index add` on the file, a write to the Milvus collection) is a new
checksum and a new computation. A Milvus collection is read whole for each map and duplicates
answer (Milvus holds the gallery: it may change at any time; a click's neighbours come from the
items of the map the page shows), so both views take at most MAX_VIEW_ITEMS items, and an index file
the same (an answer past that is tens of megabytes of JSON and minutes of work): the CLI
(`invedge map`, `invedge dedup`) does larger ones. Within that, what would hold the server for many
minutes or gigabytes is refused up front: t-SNE above layout2d.TSNE_LIMIT items, and a threshold
that finds more than MAX_PAIRS pairs. One computation runs at a time; a request that finds one
running for more than BUSY_WAIT_S is answered 503 (busy, retry) rather than queued behind it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, InvedgeError, MissingDependency
from .errors import ServeError, from_invedge
from .routes import Running
from .service import Service

if TYPE_CHECKING:
    from ..explore.items import ExploreItems

MAX_VIEW_ITEMS = 100_000  # items the map and duplicate views take; the CLI does larger galleries
DEFAULT_THRESHOLD = 0.95  # /v1/duplicates without ?threshold=
NEIGHBOURS_K = 8  # /v1/map/neighbours without ?k=
THRESHOLDS_KEPT = 8  # duplicate answers kept per gallery (one per threshold asked)
MAX_PAIRS = 1_000_000  # duplicate pairs one answer may hold (16 MB); the CLI's dedup takes 50 times more
BUSY_WAIT_S = 1.0  # how long a request waits for another one's computation before a 503

router = APIRouter()


class ExploreViews:
    """The views of the gallery as it is now, computed once and kept until it changes; one
    computation at a time (a second request waits BUSY_WAIT_S for it, then is told to retry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: object = None  # the served index the items were read from (an index file's)
        self._items: ExploreItems | None = None
        self._maps: dict[str, dict[str, Any]] = {}  # by layout method asked for
        self._duplicates: dict[float, dict[str, Any]] = {}

    def map(self, service: Service, method: str = "auto") -> dict[str, Any]:
        from ..explore.layout2d import TSNE_LIMIT

        with self._held(), explore_errors():
            items = self._current(service)
            if method == "tsne" and len(items) > TSNE_LIMIT:
                raise ServeError(
                    422,
                    f"t-SNE of {len(items):,} items would hold the server for many minutes "
                    f"(it takes at most {TSNE_LIMIT:,} here)",
                    "Ask for method=umap or method=pca, or run invedge map --method tsne on it",
                )
            if method not in self._maps:
                self._maps[method] = _map_answer(service, items, method)
            return self._maps[method]

    def neighbours(self, service: Service, row: int, k: int, checksum: str | None) -> dict[str, Any]:
        with self._held(), explore_errors():
            kept = self._items
            if kept is not None and kept.kind == "milvus" and kept.checksum == checksum:
                items = kept  # the items of the map the page shows: not the whole collection again per click
            else:
                items = self._current(service)
            if checksum is not None and checksum != items.checksum:
                raise ServeError(
                    409, "the gallery changed since the map was drawn", "Reload the map (GET /v1/map)"
                )
            if not 0 <= row < len(items):
                raise ServeError(
                    422, f"item {row} is not in the gallery of {len(items)} items", "Reload the map"
                )
            return _neighbours_answer(items, row, min(k, len(items) - 1))

    def duplicates(self, service: Service, threshold: float) -> dict[str, Any]:
        with self._held(), explore_errors():
            items = self._current(service)
            if threshold not in self._duplicates:
                if len(self._duplicates) >= THRESHOLDS_KEPT:
                    self._duplicates.pop(next(iter(self._duplicates)))
                self._duplicates[threshold] = _duplicates_answer(service, items, threshold)
            return self._duplicates[threshold]

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The views' lock, or 503 when another request's computation holds it past BUSY_WAIT_S."""
        if not self._lock.acquire(timeout=BUSY_WAIT_S):
            raise ServeError(
                503,
                "the server is computing a map or duplicates of the gallery for another request",
                "Retry in a few seconds",
                {"Retry-After": "2"},
            )
        try:
            yield
        finally:
            self._lock.release()

    def _current(self, service: Service) -> ExploreItems:
        """The gallery's items now; the views kept are dropped when they are not the same items."""
        served = service.gallery
        gallery = served.current()
        if self._items is not None and gallery is self._seen:
            return self._items  # an index file's gallery unchanged: the same object is served
        count = served.count()
        if count > MAX_VIEW_ITEMS:
            raise ServeError(
                409,
                f"the gallery holds {count:,} items; the page's map and duplicate views take at most "
                f"{MAX_VIEW_ITEMS:,}",
                "Use the CLI on it: invedge map / invedge dedup (--store S --collection C for Milvus)",
            )
        items = _items_of(served, gallery)
        if self._items is None or items.checksum != self._items.checksum:
            self._maps, self._duplicates = {}, {}
            self._items = items
        self._seen = gallery if items.kind == "index" else None
        return self._items


def _items_of(served: Any, gallery: Any) -> ExploreItems:
    """ExploreItems of what is served: an index file's `Index` as it is in memory, or every item of
    the Milvus collection (read now)."""
    from ..explore.items import ExploreItems, common_root, milvus_items
    from .gallery import LiveGallery

    if not isinstance(served, LiveGallery):
        return milvus_items(gallery)
    locations = list(gallery.locations)
    return ExploreItems(
        gallery.vectors,
        list(gallery.ids),
        locations,
        dict(gallery.space),
        str(served.path),
        "index",
        common_root(locations),
    )


def _image_urls(service: Service, items: ExploreItems) -> list[str]:
    """Each item's image URL where this server serves its file, else "" (a grey tile)."""
    return [
        f"/v1/gallery/{quote(item, safe='/')}/image" if service.images.may_serve(location) else ""
        for item, location in zip(items.ids, items.locations, strict=True)
    ]


def _map_answer(service: Service, items: ExploreItems, method: str) -> dict[str, Any]:
    from ..explore.layout2d import layout_2d
    from ..explore.map_page import MapOptions, colour_items, page_data, page_subtitle

    layout = layout_2d(items, method)
    colouring = colour_items(items, MapOptions())
    data = page_data(
        items.ids,
        layout.xy,
        thumbs=_image_urls(service, items),
        colouring=colouring,
        title="Map of the gallery",
        subtitle=page_subtitle(len(items), layout, colouring),
    )
    return data | {
        "count": len(items),
        "checksum": items.checksum,
        "layout": {
            "method": layout.method,
            "seconds": round(layout.seconds, 3),
            "from_cache": layout.from_cache,
        },
    }


def _neighbours_answer(items: ExploreItems, row: int, k: int) -> dict[str, Any]:
    """The `k` nearest other items of item `row` (exact: one product with every item)."""
    vectors = items.vectors
    scores = np.asarray(vectors, dtype=np.float32) @ np.asarray(vectors[row], dtype=np.float32)
    scores[row] = -np.inf
    top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.int64)
    top = top[np.argsort(-scores[top], kind="stable")]
    return {
        "item": row,
        "id": items.ids[row],
        "neighbours": [
            {"index": int(j), "id": items.ids[j], "score": round(float(scores[j]), 4)} for j in top
        ],
    }


def _duplicates_answer(service: Service, items: ExploreItems, threshold: float) -> dict[str, Any]:
    from ..explore.dedup import find_duplicates

    try:
        answer = find_duplicates(items, threshold, max_pairs=MAX_PAIRS).to_dict()
    except ConfigError as exc:  # too many pairs at this threshold
        raise ServeError(
            422,
            exc.message,
            "Ask for a higher threshold (near-duplicates score about 0.9 and up), or run "
            "invedge dedup on the gallery",
        ) from exc
    row = {item: r for r, item in enumerate(items.ids)}
    urls = _image_urls(service, items)
    for group in answer["groups"]:
        for member in group["members"]:
            del member["location"]  # as the map: image URLs, not the server's file paths
            member["image"] = urls[row[member["id"]]] or None
    return answer | {"checksum": items.checksum}


@contextlib.contextmanager
def explore_errors() -> Iterator[None]:
    """Library refusals as the API's: a bad value 422, a package the server lacks 501, a gallery
    rule its status (an empty gallery 409), anything else 503."""
    try:
        yield
    except MissingDependency as exc:
        raise ServeError(501, exc.message, f"On the server: {exc.hint}") from exc
    except ConfigError as exc:
        raise ServeError(422, exc.message, exc.hint or "") from exc
    except InvedgeError as exc:
        raise from_invedge(exc) from exc


@router.get("/v1/map", summary="The gallery's 2-D map (layout, colours, image URLs), for the page's Map view")
async def gallery_map(
    request: Request,
    method: Literal["auto", "umap", "tsne", "pca"] = Query(
        "auto", description="the layout: auto (UMAP where installed), umap, tsne or pca (instant)"
    ),
    service: Service = Running,
) -> Any:
    return await run_in_threadpool(views_of(request).map, service, method)


@router.get("/v1/map/neighbours", summary="The nearest gallery items of a point of the map")
async def map_neighbours(
    request: Request,
    item: int = Query(..., ge=0, description="the point's index in /v1/map's ids"),
    k: int = Query(NEIGHBOURS_K, ge=1, le=1000),
    checksum: str | None = Query(None, description="/v1/map's checksum: 409 when the gallery changed"),
    service: Service = Running,
) -> Any:
    return await run_in_threadpool(views_of(request).neighbours, service, item, k, checksum)


@router.get("/v1/duplicates", summary="Groups of near-duplicate gallery items at a cosine threshold")
async def duplicates(
    request: Request,
    threshold: float = Query(
        DEFAULT_THRESHOLD, ge=0, le=1, description="the cosine from which items are duplicates"
    ),
    service: Service = Running,
) -> Any:
    return await run_in_threadpool(views_of(request).duplicates, service, threshold)


def views_of(request: Request) -> ExploreViews:
    """The views kept by the running app (app.state.explore)."""
    return request.app.state.explore
