"""`invedge search INDEX QUERY... --k 5`: nearest gallery items as a table, JSON or a PNG grid.

With `--store S --collection C` the gallery is a Milvus collection and every positional is a query.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..bounds import EF_SEARCH, NPROBE, THREADS, K, helped
from ..index.settings import DEFAULT_K
from .options import BackendOpt, CollectionOpt, JsonOpt, StoreOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(
        ...,
        metavar="[INDEX] QUERY...",
        help="Index file from 'invedge index build' (not with --store), then query images and/or folders.",
        show_default=False,
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    k: int = typer.Option(DEFAULT_K, "--k", "-k", help=helped("Neighbours per query.", K)),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Model to embed the queries (default: the one that embedded the gallery)."
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
    json_out: bool = JsonOpt,
) -> None:
    """Find the gallery items nearest to each query image (cosine similarity)."""
    from .. import console
    from ..image_search import search_images
    from ..milvus_store.address import gallery_flags
    from .embed import report_backend

    address = gallery_flags(store, collection)
    if address is None and len(paths) < 2:
        ctx.fail("Missing argument 'QUERY...'.")
    index_path, queries = (None, list(paths)) if address is not None else (paths[0], list(paths[1:]))
    for bound, value in ((K, k), (THREADS, threads), (NPROBE, nprobe), (EF_SEARCH, ef_search)):
        if value is not None:
            bound.check(value)
    if grid is not None:  # before any work: a grid that cannot be written fails now
        from .options import writable_output

        writable_output(grid, "--grid")

    def started(embedder, found) -> None:
        if (note := found.note()) is not None:
            console.warn(note)
        report_backend(embedder)

    options = dict(
        model=model,
        backend=backend,
        threads=threads,
        exact=exact,
        nprobe=nprobe,
        ef_search=ef_search,
        grid=grid,
        on_start=started,
    )
    if address is not None:
        from ..milvus_store import open_gallery

        with open_gallery(address, collection) as gallery:
            for line in gallery.stopped_writes():  # complete, but an add or remove of it stopped midway
                console.warn(line)
            found = search_images(gallery, queries, k, **options)
            count = len(gallery)
    else:
        found = search_images(index_path, queries, k, **options)
        count = len(found.index)
    if found.skipped:
        console.warn(f"{len(found.skipped)} unreadable query image(s) skipped: {found.skipped[0][1]}")
    if found.device_note:
        console.info(f"  {found.device_note}; searching on the CPU")
    result, names = found.result, [_shown(path) for path in found.queries]
    records = result.records(names)
    if json_out:
        where = {"index": str(index_path) if index_path is not None else None}
        if store is not None:
            where |= {"store": address.shown, "collection": collection}
        console.print_json(
            where
            | {
                "k": k,
                "searcher": result.searcher,
                "backend": found.backend.name,
                "results": records,
                "skipped": [{"query": _shown(path), "reason": reason} for path, reason in found.skipped],
                "warnings": list(result.notes),
            }
        )
    else:
        console.out.print(_table(records))
    for line in result.notes:
        console.warn(line)
    if found.grid is not None:
        console.success(f"wrote {found.grid}")
    console.info(
        f"{len(names)} quer{'y' if len(names) == 1 else 'ies'} × top-{k} of {count:,} items "
        f"({result.searcher}, embedded with {found.backend.name}) in {found.seconds:.2f} s"
    )


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when under it."""
    import os

    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _table(records: list[dict]):
    from rich.table import Table

    table = Table(title=None, show_lines=False)
    table.add_column("query", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id", overflow="fold")
    for q, record in enumerate(records):
        for r, hit in enumerate(record["neighbours"]):
            table.add_row(
                record["query"] if r == 0 else "", str(hit["rank"]), f"{hit['score']:.4f}", hit["id"]
            )
        if q + 1 < len(records):
            table.add_section()
    return table
