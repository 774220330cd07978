"""Search a gallery with query images: embed them with the gallery's model, then ask the index.

The gallery is an index file (a path: loaded here) or a gallery already open: an `Index`, or a
`milvus_store.MilvusGallery` (the same surface; its caller opens and closes it).

`search_images` is the whole of `invedge search` but the printing: every refusal that needs no
model comes before the model opens (an empty gallery, k too large, a missing model, a grid that
would replace an input), and the query space is checked before any image is embedded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, IndexFileError, InvedgeError
from .index import Index, SearchResult
from .index.settings import DEFAULT_K


@dataclass
class ImageSearch:
    """What `search_images` found, with what the caller needs to show it."""

    result: SearchResult  # one row per query image that could be read
    index: Any  # the gallery searched: an `Index`, or a `milvus_store.MilvusGallery`
    queries: list[Path]  # the query images searched, in the result's order
    backend: Any  # backends.base.BackendInfo of the embedder
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable query images, why
    device_note: str | None = None  # why the search stayed on the CPU under a GPU backend
    grid: Path | None = None  # the PNG drawn, when one was asked for
    seconds: float = 0.0


def search_images(
    gallery: str | os.PathLike[str] | Any,
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
    from .embedder import Embedder, find_images

    started = time.perf_counter()
    index_path = Path(gallery) if isinstance(gallery, (str, os.PathLike)) else None
    index = Index.load(index_path, threads=threads) if index_path is not None else gallery
    count = len(index)
    if not count:  # before the model is opened: nothing to search
        name, where = _names(index, index_path)
        raise IndexFileError(
            f"the gallery {name} is empty",
            f"Add items with 'invedge index add {where} EMBEDDINGS'",
        )
    if k > count:
        raise ConfigError(
            f"k = {k} but the gallery holds {count} item{'s' * (count != 1)}",
            f"Use --k between 1 and {count}",
        )
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


def _names(gallery: Any, index_path: Path | None) -> tuple[str, str]:
    """How errors name the gallery, and what `invedge index add` is given to reach it."""
    if index_path is not None:
        return str(index_path), str(index_path)
    store = getattr(gallery, "store", None)
    if store is not None:
        collection = gallery.collection
        return f"{collection} in {store.shown}", f"--store {store.shown} --collection {collection}"
    return "in memory", "INDEX"


def _model_of(index: Any, model: str | os.PathLike[str] | None) -> Path:
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
