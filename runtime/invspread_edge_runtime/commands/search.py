"""`invedge search INDEX QUERY... --k 5`: nearest gallery items as a table, JSON or a PNG grid."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .options import BackendOpt, JsonOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    index_path: Path = typer.Argument(
        ..., metavar="INDEX", help="Index file from 'invedge index build'.", show_default=False
    ),
    queries: list[Path] = typer.Argument(
        ..., help="Query images and/or folders of them.", show_default=False
    ),
    k: int = typer.Option(5, "--k", "-k", help="Neighbours per query."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Model to embed the queries (default: the one that embedded the gallery)."
    ),
    backend: str = BackendOpt,
    threads: int = ThreadsOpt,
    exact: bool = typer.Option(False, "--exact", help="Search an ivf/hnsw index exactly."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="IVF: lists searched (overrides the index's)."),
    ef_search: int | None = typer.Option(
        None, "--ef-search", help="HNSW: search breadth (overrides the index's)."
    ),
    grid: Path | None = typer.Option(None, "--grid", help="Also draw queries and neighbours into this PNG."),
    json_out: bool = JsonOpt,
) -> None:
    """Find the gallery items nearest to each query image (cosine similarity)."""
    from .. import console
    from ..embedder import Embedder, find_images
    from ..errors import ConfigError, DataError, IndexFileError, InvedgeError
    from ..index import Index
    from .embed import report_backend

    if k < 1:
        raise ConfigError(f"Invalid --k {k}. It must be at least 1")
    if threads < 0:
        raise ConfigError(f"Invalid --threads {threads}. It must be at least 0 (0: all cores)")
    for name, value in (("--nprobe", nprobe), ("--ef-search", ef_search)):
        if value is not None and value < 1:
            raise ConfigError(f"Invalid {name} {value}. It must be at least 1")
    if grid is not None:  # before any work: a grid that cannot be written fails now
        from .options import writable_output

        writable_output(grid, "--grid")
    started = time.perf_counter()
    index = Index.load(index_path, threads=threads)
    if not len(index):  # before the model is opened: nothing to search
        raise IndexFileError(
            f"the gallery {index_path} is empty",
            f"Add items with 'invedge index add {index_path} EMBEDDINGS'",
        )
    if k > len(index):
        raise ConfigError(
            f"k = {k} but the gallery holds {len(index)} item{'s' * (len(index) != 1)}",
            f"Use --k between 1 and {len(index)}",
        )
    index.set_search_params(nprobe=nprobe, ef_search=ef_search)
    model_path = model or (Path(index.model["path"]) if index.model.get("path") else None)
    if model_path is None or not model_path.exists():
        raise InvedgeError(
            f"the model that embedded this gallery is not at {model_path}"
            if model_path
            else "no model known for this index",
            "Pass it with --model MODEL.onnx (or its export folder)",
        )
    found = find_images(queries)
    paths = found.paths
    if grid is not None and (what := _an_input(grid, index_path, paths, index.locations)) is not None:
        raise ConfigError(
            f"--grid {grid} is {what}: drawing the grid there would replace it", "Choose a new --grid file"
        )
    if (note := found.note()) is not None:
        console.warn(note)
    with Embedder(model_path, backend=backend, threads=threads, batch_size=64) as embedder:
        index.check_space(embedder.space_id, model=str(embedder.info.model_path))  # before any work
        report_backend(embedder)
        kept, vectors, failed = [], [], []
        for batch in embedder.embed_batches(paths):
            kept.extend(batch.positions)
            vectors.append(batch.vectors)
            failed.extend(batch.failures)
        if failed:
            console.warn(f"{len(failed)} unreadable query image(s) skipped: {failed[0][1]}")
        if not kept:
            raise DataError(
                f"none of the query images could be read ({failed[0][1]})" if failed else "no query images",
                "Check the query files",
            )
        why_not_gpu = index.follow_backend(embedder.info)
        if why_not_gpu and embedder.info.device.startswith("cuda"):
            console.info(f"  {why_not_gpu}; searching on the CPU")
        import numpy as np

        result = index.search(np.concatenate(vectors), k=k, space_id=embedder.space_id, exact=exact)
    names = [_shown(paths[i]) for i in kept]
    seconds = time.perf_counter() - started
    records = result.records(names)
    if json_out:
        console.print_json(
            {
                "index": str(index_path),
                "k": k,
                "searcher": result.searcher,
                "backend": embedder.info.name,
                "results": records,
                "skipped": [{"query": _shown(paths[p]), "reason": r} for p, r in failed],
                "warnings": list(result.notes),
            }
        )
    else:
        console.out.print(_table(records))
    for line in result.notes:
        console.warn(line)
    if grid is not None:
        from ..grid import Tile, draw_grid

        rows = [
            [Tile(paths[kept[q]], "query", Path(names[q]).name)]
            + [
                Tile(result.locations[q][r] or None, f"{result.scores[q, r]:.3f}", result.ids[q][r])
                for r in range(len(result.ids[q]))
            ]
            for q in range(len(names))
        ]
        draw_grid(rows, grid)
        console.success(f"wrote {grid}")
    console.info(
        f"{len(names)} quer{'y' if len(names) == 1 else 'ies'} × top-{k} of {len(index):,} items "
        f"({result.searcher}, embedded with {embedder.info.name}) in {seconds:.2f} s"
    )


def _an_input(grid: Path, index_path: Path, queries: list[Path], locations: list[str]) -> str | None:
    """What `grid` would overwrite among the command's inputs (the index, a query or gallery image)."""
    import os

    names = {os.path.abspath(grid), os.path.realpath(grid)}
    if os.path.realpath(index_path) in names:
        return "the index file"
    if any(os.path.realpath(query) in names for query in queries):
        return "a query image"
    if not names.isdisjoint(locations):
        return "an image of the gallery"
    return None


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
