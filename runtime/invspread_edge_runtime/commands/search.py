"""`invedge search INDEX QUERY... --k 5`: nearest gallery items as a table, JSON or a PNG grid.

With `--store S --collection C` the gallery is a Milvus collection and every positional is a query.
A query may be a video file, a stream or a camera: each frame the sampling keeps (--every, --fps,
...) is one query; a stream needs --duration or --max-frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..bounds import EF_SEARCH, NPROBE, K, helped
from ..index.settings import DEFAULT_K
from .options import (
    BackendOpt,
    CollectionOpt,
    DecoderOpt,
    DurationOpt,
    EndOpt,
    EveryOpt,
    FpsOpt,
    JsonOpt,
    MaxFramesOpt,
    OpenTimeoutOpt,
    ReconnectOpt,
    StartOpt,
    StoreOpt,
    ThreadsOpt,
    sampling_from,
    writable_output,
)

if TYPE_CHECKING:
    from ..search.images import ImageSearch


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(
        ...,
        metavar="[INDEX] QUERY...",
        help="Index file from 'invedge index build' (not with --store), then query images, videos, "
        "folders of them, streams (with --duration or --max-frames) and cameras.",
        show_default=False,
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    k: int = typer.Option(DEFAULT_K, "--k", "-k", help=helped("Neighbours per query.", K)),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model to embed the queries (default: the one that embedded the gallery); triton:URL: "
        "a Triton server's model, as --backend triton:URL.",
    ),
    backend: str = BackendOpt,
    threads: int = ThreadsOpt,
    exact: bool = typer.Option(False, "--exact", help="Search an ivf/hnsw index exactly."),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help=helped("IVF: lists searched (overrides the index's).", NPROBE)
    ),
    ef_search: int | None = typer.Option(
        None, "--ef-search", help=helped("HNSW: search breadth (overrides the index's).", EF_SEARCH)
    ),
    grid: Path | None = typer.Option(None, "--grid", help="Also draw queries and neighbours into this PNG."),
    every: int = EveryOpt,
    fps: float | None = FpsOpt,
    max_frames: int | None = MaxFramesOpt,
    duration: str | None = DurationOpt,
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    open_timeout: float = OpenTimeoutOpt,
    reconnect: int = ReconnectOpt,
    decoder: str = DecoderOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Find the gallery items nearest to each query image or video frame (cosine similarity)."""
    from .. import console
    from ..search.images import SearchOptions, search_gallery
    from ..sources.open import StreamSettings

    if store is None and collection is None and len(paths) < 2:
        ctx.fail("Missing argument 'QUERY...'.")
    index, queries = (None, paths) if store is not None else (Path(paths[0]), paths[1:])
    streams = StreamSettings(
        sampling_from(every, fps, max_frames, duration, start, end),
        open_timeout=open_timeout,
        reconnect=reconnect,
        decoder=decoder,
    )
    options = SearchOptions(
        queries,
        index=index,
        store=store,
        collection=collection,
        k=k,
        model=model,
        backend=backend,
        threads=threads,
        exact=exact,
        nprobe=nprobe,
        ef_search=ef_search,
        grid=grid,
        streams=streams,
    )
    if grid is not None:  # before any work: a grid that cannot be written fails now
        writable_output(grid, "--grid")
    found = search_gallery(options, on_start=_started, on_warning=console.warn)
    _print(found, json_out)


def _started(embedder, images) -> None:
    from .. import console
    from .embed import inputs_read, report_backend

    if (note := images.note()) is not None:
        console.warn(note)
    report_backend(embedder)
    if images.videos:
        console.info(f"queries: {inputs_read(images)}")


def _print(found: ImageSearch, json_out: bool) -> None:
    """The results (a table, or the JSON on stdout) and the lines around them on stderr."""
    from .. import console

    if found.skipped:
        console.warn(f"{len(found.skipped)} unreadable query image(s) skipped: {found.skipped[0][1]}")
    if found.device_note:
        console.info(f"  {found.device_note}; searching on the CPU")
    if json_out:
        console.print_json(found.to_dict())
    else:
        console.out.print(_table(found.records()))
    for line in found.result.notes:
        console.warn(line)
    if found.grid is not None:
        console.success(f"wrote {found.grid}")
    n = len(found.queries)
    console.info(
        f"{n} quer{'y' if n == 1 else 'ies'} × top-{found.k} of {found.count:,} items "
        f"({found.result.searcher}, embedded with {found.backend.name}) in {found.seconds:.2f} s"
    )


def _table(records: list[dict]):
    from rich.table import Table

    timed = any("at" in hit for record in records for hit in record["neighbours"])
    table = Table(title=None, show_lines=False)
    table.add_column("query", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id", overflow="fold")
    if timed:  # frames among the results: their time as people read it (a query's is in its id)
        table.add_column("time", overflow="fold")
    for q, record in enumerate(records):
        for r, hit in enumerate(record["neighbours"]):
            row = [record["query"] if r == 0 else "", str(hit["rank"]), f"{hit['score']:.4f}", hit["id"]]
            table.add_row(*row, *([hit.get("at", "")] if timed else []))
        if q + 1 < len(records):
            table.add_section()
    return table
