"""Search a gallery with query images: embed them with the gallery's model, then ask the index.

The gallery is an index file (a path: loaded here) or a `Gallery` already open (the root
gallery.py: an `Index`, or a `milvus_store.MilvusGallery`; its caller opens and closes it).

`search_gallery(SearchOptions(...))` is the whole of `invedge search` but the printing: it opens
the gallery the options name and runs `search_images`, where every refusal that needs no model
comes before the model opens (an empty gallery, k too large, a missing model, a grid that would
replace an input), and the query space is checked before any image is embedded.

Queries may be video files, streams and cameras too (`embeddings.videos.find_inputs`): each frame
their sampling keeps is one query, named by its id `SOURCE#t=SECONDS`; results that are frames
carry their time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bounds import EF_SEARCH, NPROBE, THREADS, K, check_bounds
from ..embeddings.videos import find_inputs
from ..errors import ConfigError, DataError, InvedgeError, SourceError
from ..gallery import Gallery, check_k
from ..index.gallery import Index
from ..index.result import SearchResult
from ..index.settings import DEFAULT_K
from ..sources.frame import Frame, format_time, frame_of
from ..sources.open import StreamSettings
from ..sources.spec import VideoInput, as_input, is_location

Query = Path | Frame  # a query image, or a video frame
GRID_ROWS = 100  # queries drawn in a --grid (a long video's frames would make a PNG no one can open)
GRID_THUMB = 112  # pixels: a query frame is kept this small for the grid, not at full resolution


@dataclass
class ImageSearch:
    """What `search_images` found, with what the caller needs to show it."""

    result: SearchResult  # one row per query image that could be read
    index: Gallery  # the gallery searched: an `Index`, or a `milvus_store.MilvusGallery`
    queries: list[Query]  # the query images and frames searched, in the result's order
    backend: Any  # backends.base.BackendInfo of the embedder
    skipped: list[tuple[Path | str, str]] = field(
        default_factory=list
    )  # unreadable queries (a URL as text), why
    device_note: str | None = None  # why the search stayed on the CPU under a GPU backend
    grid: Path | None = None  # the PNG drawn, when one was asked for
    seconds: float = 0.0
    k: int = DEFAULT_K  # neighbours asked for per query
    count: int = 0  # items in the gallery searched
    index_path: Path | None = None  # the index file searched (None: a gallery already open)

    def records(self) -> list[dict[str, Any]]:
        """One record per query (named as the user would type it) with its ranked neighbours; a
        frame's record says its source, index and time, and so does a neighbour that is a frame."""
        records = self.result.records([shown_query(query) for query in self.queries])
        for query, record in zip(self.queries, records, strict=True):
            if isinstance(query, Frame):  # what its id does not say: its source and frame index
                record |= {"source": query.source, "index": query.index, "time": query.time}
                record["at"] = query.at
        return records

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
                "skipped": [
                    {"query": shown_input(query), "reason": reason} for query, reason in self.skipped
                ],
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

    queries: Sequence[Path | str]  # files and folders (Paths), stream URLs and cameras (str), as a tuple
    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    k: int = DEFAULT_K
    model: Path | str | None = None  # `triton:URL` stays text (backends/triton.py `as_model`)
    backend: str = "auto"
    threads: int = 0
    exact: bool = False  # search an ivf/hnsw index exactly
    nprobe: int | None = None  # IVF: lists searched (None: the index's)
    ef_search: int | None = None  # HNSW: search breadth (None: the index's)
    grid: Path | None = None
    streams: StreamSettings = field(default_factory=StreamSettings)  # video queries: what is kept
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
        object.__setattr__(self, "queries", tuple(as_input(query) for query in self.queries))
        if self.model is not None:
            from ..backends.triton import as_model

            object.__setattr__(self, "model", as_model(self.model))


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
        streams=options.streams,
        on_event=on_warning,
    )
    if options.address is None:
        assert options.index is not None
        return search_images(options.index, list(options.queries), options.k, **knobs)
    with opened_store_gallery(options.address, options.collection, on_warning) as gallery:
        return search_images(gallery, list(options.queries), options.k, **knobs)


@contextlib.contextmanager
def opened_store_gallery(
    address: Any, collection: str | None, on_warning: Callable[[str], None] | None = None
) -> Iterator[Gallery]:
    """A Milvus gallery opened for searching (search, watch), closed after; `on_warning` first hears
    each add or remove that stopped midway (the gallery is complete, but that change is not all there)."""
    from ..milvus_store.gallery import open_gallery

    with open_gallery(address, collection) as gallery:
        for line in gallery.stopped_writes():
            if on_warning is not None:
                on_warning(line)
        yield gallery


def search_images(
    gallery: str | os.PathLike[str] | Gallery,
    queries: Sequence[Path | str],
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
    streams: StreamSettings | None = None,
    on_event: Callable[[str], None] | None = None,
) -> ImageSearch:
    """The `k` gallery items nearest to each query image (files and folders of them) and to each
    frame that `streams` keeps of the video files, streams and cameras among the queries.

    `gallery`: an index file's path, or an open gallery (`Index`, `MilvusGallery`).
    `model`: the model that embeds the queries (default: the one that embedded the gallery).
    `grid`: also draw queries and neighbours into this PNG. `on_start(embedder, images)` is called
    once the model is open, before any image is embedded; `on_event(line)` hears of a video's
    damage, a stream's drops and reconnects.
    """
    from ..embedder import Embedder

    started = time.perf_counter()
    index_path = Path(gallery) if isinstance(gallery, (str, os.PathLike)) else None
    index: Gallery = Index.load(index_path, threads=threads) if index_path is not None else gallery
    count = len(index)
    check_k(k, count, index.where())  # before the model is opened
    index.set_search_params(nprobe=nprobe, ef_search=ef_search)
    model_path, backend = _model_of(index, model, backend)
    streams = streams or StreamSettings()
    found = find_inputs(queries)
    paths = found.paths
    _refuse_endless(found.videos, streams)
    held = index.locations if isinstance(index, Index) else []  # a Milvus gallery's are not listed here
    files = paths + [Path(v.spec.target) for v in found.videos if not is_location(v.spec.target)]
    if grid is not None and (what := _an_input(Path(grid), index_path, files, held)) is not None:
        raise ConfigError(
            f"--grid {grid} is {what}: drawing the grid there would replace it", "Choose a new --grid file"
        )
    with Embedder(model_path, backend=backend, threads=threads) as embedder:
        index.check_space(embedder.space_id, model=str(embedder.info.model_path))  # before any work
        if on_start is not None:
            on_start(embedder, found)
        kept, vectors, skipped = embed_queries(embedder, paths, required=not found.videos)
        thumbs = max(0, GRID_ROWS - len(kept)) if grid is not None else 0  # the frames the grid shows
        frames, more, failed = embed_frame_queries(embedder, found.videos, streams, thumbs, on_event)
        if not kept and not frames:
            reason = (skipped and skipped[0][1]) or (failed and failed[0][1])
            raise DataError(f"no query could be read ({reason or 'no frames kept'})", "Check the query files")
        device_note = index.follow_backend(embedder.info)
        result = index.search(np.concatenate(vectors + more), k=k, space_id=embedder.space_id, exact=exact)
    search = ImageSearch(
        result,
        index,
        [paths[i] for i in kept] + frames,
        embedder.info,
        [(paths[p], reason) for p, reason in skipped] + failed,
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
    embedder: Any, paths: list[Path], required: bool = True
) -> tuple[list[int], list[np.ndarray], list[tuple[int, str]]]:
    """Embed every query image: (positions embedded, their vector batches, (position, why) unreadable).

    DataError when none could be read (`required`: there are no other queries).
    """
    kept: list[int] = []
    vectors: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for batch in embedder.embed_batches(paths):
        kept.extend(batch.positions)
        vectors.append(batch.vectors)
        failed.extend(batch.failures)
    if not kept and required:
        raise DataError(
            f"none of the query images could be read ({failed[0][1]})" if failed else "no query images",
            "Check the query files",
        )
    return kept, vectors, failed


def embed_frame_queries(
    embedder: Any,
    videos: list[VideoInput],
    streams: StreamSettings,
    thumbs: int = 0,
    on_event: Callable[[str], None] | None = None,
) -> tuple[list[Frame], list[np.ndarray], list[tuple[Path | str, str]]]:
    """The kept frames of each video query, embedded: (frames, vector batches, (file or URL, why)
    for a video that could not be opened). A stream that cannot be opened raises SourceError. The
    first `thumbs` frames keep a small picture (for a grid), the others none."""

    frames: list[Frame] = []
    vectors: list[np.ndarray] = []
    failed: list[tuple[Path | str, str]] = []
    for video in videos:
        name = video_name(video)
        try:
            source = streams.open(video.spec, name=name, on_event=on_event)
        except (SourceError, DataError) as exc:
            if video.live:
                raise
            failed.append((name, exc.message))
            continue
        with source:
            for batch, batch_vectors in embedder.embed_frames(
                source.frames(), batch_size=1 if source.live else None
            ):
                first = len(frames)
                frames.extend([_shrunk(frame, first + n < thumbs) for n, frame in enumerate(batch)])
                vectors.append(batch_vectors)
    return frames, vectors, failed


def video_name(video: VideoInput) -> str:
    """A video query as results name it: a local file's path as the user would type it, else the
    source's name (a URL without its password, a camera)."""
    if is_location(video.spec.target):
        return video.spec.name
    return shown_path(Path(video.spec.target).absolute())


def _shrunk(frame: Frame, keep: bool) -> Frame:
    """The frame with a thumbnail of its picture (`keep`: the grid draws it), or with none."""
    import dataclasses

    if not keep:
        return dataclasses.replace(frame, rgb=np.zeros((0, 0, 3), np.uint8))
    from PIL import Image

    picture = Image.fromarray(frame.rgb)
    picture.thumbnail((GRID_THUMB, GRID_THUMB))
    return dataclasses.replace(frame, rgb=np.asarray(picture))


def _refuse_endless(videos: list[VideoInput], streams: StreamSettings) -> None:
    """A stream as a query runs only as long as asked: it has no end of its own."""
    sampling = streams.sampling
    live = next((video for video in videos if video.live), None)
    if live is not None and sampling.duration is None and sampling.max_frames is None:
        raise ConfigError(
            f"{live.name} is live: as a query it needs an end",
            "Add --duration (e.g. 10s) or --max-frames (e.g. 20)",
        )


def shown_query(query: Query) -> str:
    """A query as the results name it: an image's path as typed, a frame's id."""
    return query.item_id if isinstance(query, Frame) else shown_path(query)


def shown_input(query: Path | str) -> str:
    """A query that could not be read, as results name it: a path as typed, a URL as given."""
    return query if isinstance(query, str) else shown_path(query)


def draw_results(search: ImageSearch, out: str | os.PathLike[str]) -> Path:
    """A PNG: one row per query, the query image or frame first, then its neighbours with scores
    and ids; a neighbour that is a frame of a video file is decoded from it (a live one, gone
    since, is a labelled placeholder)."""
    from .grid import draw_grid

    result = search.result
    if len(search.queries) > GRID_ROWS:
        result.notes.append(f"the grid shows the first {GRID_ROWS} of {len(search.queries):,} queries")
    rows = [
        [_query_tile(query)]
        + [
            _result_tile(result.ids[q][r], result.locations[q][r], f"{result.scores[q, r]:.3f}")
            for r in range(len(result.ids[q]))
        ]
        for q, query in enumerate(search.queries[:GRID_ROWS])
    ]
    return draw_grid(rows, out)


def _query_tile(query: Query) -> Any:
    from PIL import Image

    from .grid import Tile

    if isinstance(query, Frame):
        return Tile(Image.fromarray(query.rgb), "query", f"{Path(query.source).name} {query.at}")
    return Tile(query, "query", query.name)


def _result_tile(item_id: str, location: str, caption: str) -> Any:
    from .grid import Tile

    frame = frame_of(item_id)
    if frame is None:
        return Tile(location or None, caption, item_id)
    at = format_time(frame)
    if frame["live"]:
        return Tile(None, caption, at, placeholder="live frame")
    return Tile(
        _frame_image(location, float(frame["time"])), caption, f"{Path(str(frame['source'])).name} {at}"
    )


def _frame_image(location: str, time: float) -> Any:
    """The frame at `time` of the video file `location` names (SOURCE#t=...), or None."""
    from PIL import Image

    path = location.rpartition("#t=")[0] if location else ""
    if not path or not Path(path).is_file():
        return None
    try:
        from ..sources.pyav import frame_at

        return Image.fromarray(frame_at(path, time))
    except InvedgeError:
        return None


def _model_of(
    index: Gallery, model: str | os.PathLike[str] | None, backend: str = "auto"
) -> tuple[Path | None, str]:
    """(model, backend) that embed the queries: the model given, else the one that embedded the
    gallery, which must exist; no local model for a Triton server's (`--backend triton:URL`, or
    `--model triton:URL`: `backends.select.on_triton`), whose space is checked as any model's."""
    from ..backends.select import on_triton
    from ..backends.triton import is_triton, served_model

    model, backend = on_triton(model, backend)
    model_path = Path(model) if model is not None else None
    if model_path is None and is_triton(backend):
        return None, backend
    if model_path is None and (served := served_model(index.model.get("path"))):
        raise InvedgeError(
            f"this gallery was embedded by the Triton model {served}",
            f"Search it there with --model {served}, or pass a local --model",
        )
    if model_path is None and index.model.get("path"):
        model_path = Path(index.model["path"])
    if model_path is None or not model_path.exists():
        raise InvedgeError(
            f"the model that embedded this gallery is not at {model_path}"
            if model_path
            else "no model known for this index",
            "Pass it with --model MODEL.onnx (or its export folder)",
        )
    return model_path, backend


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
