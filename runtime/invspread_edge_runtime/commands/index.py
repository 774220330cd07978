"""`invedge index build|add|remove|info`: a searchable gallery made from embeddings folders."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..index.settings import EF_SEARCH, HNSW_M, KINDS, TARGET_RECALL
from .options import JsonOpt, ThreadsOpt

KindOpt = typer.Option(
    KINDS[0], "--kind", help="flat (exact), ivf or hnsw (approximate, faiss; for large galleries)."
)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Build and change gallery indexes.", no_args_is_help=True)
    group.command("build")(build)
    group.command("add")(add)
    group.command("remove")(remove)
    group.command("info")(info)
    app.add_typer(group, name="index")


def build(
    embeddings: Path = typer.Argument(
        ..., help="An embeddings folder written by 'invedge embed'.", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Index file to write (e.g. photos.index).", show_default=False
    ),
    kind: str = KindOpt,
    nlist: int | None = typer.Option(None, "--nlist", help="IVF: number of lists (default ≈ 4·√N)."),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help=f"IVF: lists searched (default: tuned to recall@10 ≥ {TARGET_RECALL})."
    ),
    m: int = typer.Option(HNSW_M, "--m", help="HNSW: links per node."),
    ef_search: int = typer.Option(
        EF_SEARCH, "--ef-search", help=f"HNSW: search breadth (raised until recall@10 ≥ {TARGET_RECALL})."
    ),
    threads: int = ThreadsOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index file."),
    json_out: bool = JsonOpt,
) -> None:
    """Build an index from embeddings (exact by default)."""
    from .. import console
    from ..embeddings import load_embeddings
    from ..errors import ConfigError
    from ..files import human_size
    from ..index import Index, writing

    if kind not in KINDS:
        raise ConfigError(f"Invalid --kind {kind!r}. Only {', '.join(KINDS)} are supported")
    for name, value in (("--nlist", nlist), ("--nprobe", nprobe), ("--m", m), ("--ef-search", ef_search)):
        if value is not None and value < 1:
            raise ConfigError(f"Invalid {name} {value}. It must be at least 1")
    if threads < 0:
        raise ConfigError(f"Invalid --threads {threads}. It must be at least 0 (0: all cores)")
    _check_out(out, overwrite)  # before the work; again under the lock
    started = time.perf_counter()
    emb = load_embeddings(embeddings)
    with writing(out):  # a second build of the same file waits here, then sees the first one's
        _check_out(out, overwrite)
        console.info(f"indexing {len(emb):,} embeddings ({emb.dim}-d) from {embeddings} as {kind}")
        index = Index.from_embeddings(
            emb, kind, nlist=nlist, nprobe=nprobe, m=m, ef_search=ef_search, threads=threads
        )
        size = index.save(out)  # atomic: the old file stays whole until the new one replaces it
    seconds = time.perf_counter() - started
    if json_out:
        console.print_json(
            index.info() | {"path": str(out), "size_bytes": size, "seconds": round(seconds, 3)}
        )
    if index.recall_at_10 is not None:
        console.info(f"recall@10 vs exact: {index.recall_at_10:.3f} ({_params(index.params)})")
    console.success(f"{kind} index of {len(index):,} items → {out} ({human_size(size)}) in {seconds:.1f} s")
    console.info(f"next: invedge search {out} QUERY.jpg --k 5")


def add(
    index_path: Path = typer.Argument(
        ..., metavar="INDEX", help="Index file to extend (rewritten atomically).", show_default=False
    ),
    embeddings: list[Path] = typer.Argument(..., help="Embeddings folders to add.", show_default=False),
    json_out: bool = JsonOpt,
) -> None:
    """Add the items of embeddings folders (same model; new ids) to an index."""
    from .. import console
    from ..embeddings import load_embeddings
    from ..files import human_size
    from ..index import Index, writing

    loaded = [load_embeddings(folder) for folder in embeddings]
    with writing(index_path):  # from the read to the rename: no other add/remove in between
        index = Index.load(index_path)
        before = len(index)
        for folder, emb in zip(embeddings, loaded, strict=True):
            index.add(
                emb.vectors, emb.ids, space_id=emb.space_id, locations=emb.locations(), source=str(folder)
            )
        size = index.save(index_path)
    if json_out:
        console.print_json(index.info() | {"path": str(index_path), "added": len(index) - before})
    console.success(
        f"added {len(index) - before:,} items → {index_path} now holds {len(index):,} ({human_size(size)})"
    )


def remove(
    index_path: Path = typer.Argument(
        ..., metavar="INDEX", help="Index file (rewritten atomically).", show_default=False
    ),
    ids: list[str] = typer.Argument(
        None, help="Ids to remove (as shown by search and 'index info --ids').", show_default=False
    ),
    ids_file: Path | None = typer.Option(None, "--ids-file", help="A text file with one id per line."),
    json_out: bool = JsonOpt,
) -> None:
    """Remove items from an index by id."""
    from .. import console
    from ..errors import ConfigError
    from ..index import Index, writing

    wanted = list(ids or [])
    if ids_file is not None:
        wanted += read_ids_file(ids_file)
    if not wanted:
        raise ConfigError("no ids to remove", "Pass ids or --ids-file FILE")
    with writing(index_path):  # from the read to the rename
        index = Index.load(index_path)
        removed = index.remove(wanted)
        index.save(index_path)  # the last item too: an empty gallery is a valid index
    if json_out:
        console.print_json(index.info() | {"path": str(index_path), "removed": removed})
    console.success(f"removed {removed:,} items → {index_path} now holds {len(index):,}")
    if not len(index):
        console.info(f"the gallery is empty; add items with: invedge index add {index_path} EMBEDDINGS")


def read_ids_file(path: Path) -> list[str]:
    """One id per line (UTF-8); blank lines are skipped."""
    from ..errors import DataError

    if path.is_dir():
        raise DataError(f"ids file {path} is a folder", "Give a text file with one id per line")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"ids file not found: {path}", "Give a text file with one id per line") from exc
    except OSError as exc:
        raise DataError(f"cannot read ids file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"ids file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})",
            "Save it as UTF-8, one id per line (ids are shown by 'invedge index info INDEX --ids')",
        ) from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_out(out: Path, overwrite: bool) -> None:
    from ..errors import InvedgeError

    if out.is_dir():
        raise InvedgeError(f"{out} is a folder", "--out is the index file to write, e.g. photos.index")
    if out.exists() and not overwrite:
        raise InvedgeError(f"{out} already exists", "Pass --overwrite to replace it")


def info(
    index_path: Path = typer.Argument(..., metavar="INDEX", help="Index file.", show_default=False),
    show_ids: bool = typer.Option(False, "--ids", help="Also list every id."),
    json_out: bool = JsonOpt,
) -> None:
    """Show what an index holds: kind, size, embedding space, model, recall."""
    from rich.table import Table

    from .. import console
    from ..files import human_size
    from ..index import Index

    index = Index.load(index_path)
    facts = index.info() | {"path": str(index_path), "size_bytes": index_path.stat().st_size}
    if show_ids:
        facts["ids"] = index.ids
    if json_out:
        console.print_json(facts)
        return
    table = Table(show_header=False, box=None)
    table.add_row("file", f"{index_path} ({human_size(facts['size_bytes'])})")
    table.add_row("kind", index.kind + (f" ({_params(index.params)})" if index.params else ""))
    table.add_row("items", f"{len(index):,} × {index.dim}" + (" (empty)" if not len(index) else ""))
    table.add_row("space", index.space_id)
    if index.model:
        table.add_row("model", f"{index.model.get('path', '?')} ({index.model.get('precision', '?')})")
    if index.recall_at_10 is not None:
        table.add_row("recall@10", f"{index.recall_at_10:.3f} vs exact")
    console.out.print(table)
    if show_ids:
        for item in index.ids:
            console.out.print(item, highlight=False)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed")
