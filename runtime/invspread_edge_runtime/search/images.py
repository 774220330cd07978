"""Search a gallery with query images: embed them with the gallery's model, then ask the index.

The gallery is an index file (a path: loaded here) or a `Gallery` already open (the root
gallery.py: an `Index`, or a `milvus_store.MilvusGallery`; its caller opens and closes it).

`search_gallery(SearchOptions(...))` is the whole of `invedge search` but the printing: it opens
the gallery the options name and runs `search_images`, where every refusal that needs no model
comes before the model opens (an empty gallery, k too large, a missing model, a grid that would
replace an input), and the query space is checked before any image is embedded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bounds import EF_SEARCH, NPROBE, THREADS, K, check_bounds
from ..errors import ConfigError, DataError, InvedgeError
from ..gallery import Gallery, check_k
from ..index.gallery import Index
from ..index.result import SearchResult
from ..index.settings import DEFAULT_K


@dataclass
class ImageSearch:
    """What `search_images` found, with what the caller needs to show it."""

    result: SearchResult  # one row per query image that could be read
    index: Gallery  # the gallery searched: an `Index`, or a `milvus_store.MilvusGallery`
    queries: list[Path]  # the query images searched, in the result's order
    backend: Any  # backends.base.BackendInfo of the embedder
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable query images, why
    device_note: str | None = None  # why the search stayed on the CPU under a GPU backend
    grid: Path | None = None  # the PNG drawn, when one was asked for
    seconds: float = 0.0
    k: int = DEFAULT_K  # neighbours asked for per query
    count: int = 0  # items in the gallery searched
    index_path: Path | None = None  # the index file searched (None: a gallery already open)

    def records(self) -> list[dict[str, Any]]:
        """One record per query (named as the user would type it) with its ranked neighbours."""
        return self.result.records([shown_path(path) for path in self.queries])

    def to_dict(self) -> dict[str, Any]:
        """What `invedge search --json` prints: the gallery, the results, what was skipped and why."""
        index = {"index": str(self.index_path) if self.index_path is not None else None}
        return (
            index
            | self.index.where().facts
            | {
                "k": self.k,
                "searcher": self.result.searcher,
                "backend": self.backend.name,
                "results": self.records(),
                "skipped": [{"query": shown_path(path), "reason": reason} for path, reason in self.skipped],
                "warnings": list(self.result.notes),
            }
        )


SEARCH_BOUNDS = {"k": K, "threads": THREADS, "nprobe": NPROBE, "ef_search": EF_SEARCH}


@dataclass(frozen=True)
class SearchOptions:
    """What one `invedge search` asks. A value the command refuses raises its one-line ConfigError
    when the options are made, before any file is read.

    The gallery is the index file `index`, or the Milvus collection `collection` in `store`
    (milvus:FILE or milvus://HOST:PORT). `model`: the model that embeds the queries (default: the
    one that embedded the gallery); `grid`: also draw queries and neighbours into this PNG.
    """

    queries: Sequence[Path]  # image files and folders (kept as a tuple)
    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    k: int = DEFAULT_K
    model: Path | None = None
    backend: str = "auto"
    threads: int = 0
    exact: bool = False  # search an ivf/hnsw index exactly
    nprobe: int | None = None  # IVF: lists searched (None: the index's)
    ef_search: int | None = None  # HNSW: search breadth (None: the index's)
    grid: Path | None = None
    address: Any = field(init=False, default=None, repr=False)  # milvus_store.StoreAddress of `store`

    def __post_init__(self) -> None:
        from ..milvus_store.address import gallery_flags

        address = gallery_flags(self.store, self.collection)
        if (address is None) == (self.index is None):
            raise ConfigError(
                "search needs one gallery: an index file or --store",
                "Pass INDEX, or --store S --collection C",
            )
        check_bounds(SEARCH_BOUNDS, vars(self))
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "queries", tuple(Path(query) for query in self.queries))


def search_gallery(
    options: SearchOptions,
    *,
    on_start: Callable[[Any, Any], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ImageSearch:
    """Open the gallery `options` names and search it (`search_images`); a Milvus gallery is closed after.

    `on_warning(line)` hears, before the search, that a Milvus gallery's last add or remove stopped
    midway (the gallery is complete, but that change is not all there).
    """
    knobs = dict(
        model=options.model,
        backend=options.backend,
        threads=options.threads,
        exact=options.exact,
        nprobe=options.nprobe,
        ef_search=options.ef_search,
        grid=options.grid,
        on_start=on_start,
    )
    if options.address is None:
        assert options.index is not None
        return search_images(options.index, list(options.queries), options.k, **knobs)
    from ..milvus_store.gallery import open_gallery

    with open_gallery(options.address, options.collection) as gallery:
        for line in gallery.stopped_writes():
            if on_warning is not None:
                on_warning(line)
        return search_images(gallery, list(options.queries), options.k, **knobs)


def search_images(
    gallery: str | os.PathLike[str] | Gallery,
    queries: list[Path],
    k: int = DEFAULT_K,
    *,
    model: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    threads: int = 0,
    exact: bool = False,
    nprobe: int | None = None,
    ef_search: int | None = None,
    grid: str | os.PathLike[str] | None = None,
    on_start: Callable[[Any, Any], None] | None = None,
) -> ImageSearch:
    """The `k` gallery items nearest to each query image (files and folders of them).

    `gallery`: an index file's path, or an open gallery (`Index`, `MilvusGallery`).
    `model`: the model that embeds the queries (default: the one that embedded the gallery).
    `grid`: also draw queries and neighbours into this PNG. `on_start(embedder, images)` is called
    once the model is open, before any image is embedded.
    """
    from ..embedder import Embedder, find_images

    started = time.perf_counter()
    index_path = Path(gallery) if isinstance(gallery, (str, os.PathLike)) else None
    index: Gallery = Index.load(index_path, threads=threads) if index_path is not None else gallery
    count = len(index)
    check_k(k, count, index.where())  # before the model is opened
    index.set_search_params(nprobe=nprobe, ef_search=ef_search)
    model_path = _model_of(index, model)
    found = find_images(queries)
    paths = found.paths
    held = index.locations if isinstance(index, Index) else []  # a Milvus gallery's are not listed here
    if grid is not None and (what := _an_input(Path(grid), index_path, paths, held)) is not None:
        raise ConfigError(
            f"--grid {grid} is {what}: drawing the grid there would replace it", "Choose a new --grid file"
        )
    with Embedder(model_path, backend=backend, threads=threads) as embedder:
        index.check_space(embedder.space_id, model=str(embedder.info.model_path))  # before any work
        if on_start is not None:
            on_start(embedder, found)
        kept, vectors, skipped = embed_queries(embedder, paths)
        device_note = index.follow_backend(embedder.info)
        result = index.search(np.concatenate(vectors), k=k, space_id=embedder.space_id, exact=exact)
    search = ImageSearch(
        result,
        index,
        [paths[i] for i in kept],
        embedder.info,
        [(paths[p], reason) for p, reason in skipped],
        device_note if embedder.info.device.startswith("cuda") and isinstance(index, Index) else None,
        k=k,
        count=count,
        index_path=index_path,
    )
    search.seconds = time.perf_counter() - started
    if grid is not None:
        search.grid = draw_results(search, grid)
    return search


def embed_queries(
    embedder: Any, paths: list[Path]
) -> tuple[list[int], list[np.ndarray], list[tuple[int, str]]]:
    """Embed every query image: (positions embedded, their vector batches, (position, why) unreadable).

    DataError when none could be read.
    """
    kept: list[int] = []
    vectors: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for batch in embedder.embed_batches(paths):
        kept.extend(batch.positions)
        vectors.append(batch.vectors)
        failed.extend(batch.failures)
    if not kept:
        raise DataError(
            f"none of the query images could be read ({failed[0][1]})" if failed else "no query images",
            "Check the query files",
        )
    return kept, vectors, failed


def draw_results(search: ImageSearch, out: str | os.PathLike[str]) -> Path:
    """A PNG: one row per query, the query image first, then its neighbours with scores and ids."""
    from .grid import Tile, draw_grid

    result = search.result
    rows = [
        [Tile(query, "query", query.name)]
        + [
            Tile(result.locations[q][r] or None, f"{result.scores[q, r]:.3f}", result.ids[q][r])
            for r in range(len(result.ids[q]))
        ]
        for q, query in enumerate(search.queries)
    ]
    return draw_grid(rows, out)


def _model_of(index: Gallery, model: str | os.PathLike[str] | None) -> Path:
    """The model given, else the one that embedded the gallery; it must exist."""
    model_path = Path(model) if model is not None else None
    if model_path is None and index.model.get("path"):
        model_path = Path(index.model["path"])
    if model_path is None or not model_path.exists():
        raise InvedgeError(
            f"the model that embedded this gallery is not at {model_path}"
            if model_path
            else "no model known for this index",
            "Pass it with --model MODEL.onnx (or its export folder)",
        )
    return model_path


def _an_input(grid: Path, index_path: Path | None, queries: list[Path], locations: list[str]) -> str | None:
    """What `grid` would overwrite among the command's inputs (the index, a query or gallery image)."""
    names = {os.path.abspath(grid), os.path.realpath(grid)}
    if index_path is not None and os.path.realpath(index_path) in names:
        return "the index file"
    if any(os.path.realpath(query) in names for query in queries):
        return "a query image"
    if not names.isdisjoint(locations):
        return "an image of the gallery"
    return None


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when under it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative
