"""`invedge index build|add|remove|info`: a searchable gallery made from embeddings folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import bounds
from ..bounds import helped
from ..index.settings import EF_SEARCH, HNSW_M, KINDS, TARGET_RECALL
from .options import CollectionOpt, JsonOpt, StoreOpt, ThreadsOpt, progress_bar

if TYPE_CHECKING:
    from ..index.manage import IndexBuildResult

KindOpt = typer.Option(
    KINDS[0],
    "--kind",
    help="flat (exact), ivf or hnsw (approximate: faiss, or Milvus with --store; for large galleries).",
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
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Index file to write (e.g. photos.index).", show_default=False
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    kind: str = KindOpt,
    nlist: int | None = typer.Option(
        None, "--nlist", help=helped("IVF: number of lists (default ≈ 4·√N).", bounds.NLIST)
    ),
    nprobe: int | None = typer.Option(
        None,
        "--nprobe",
        help=helped(f"IVF: lists searched (default: tuned to recall@10 ≥ {TARGET_RECALL}).", bounds.NPROBE),
    ),
    m: int = typer.Option(HNSW_M, "--m", help=helped("HNSW: links per node.", bounds.HNSW_M)),
    ef_search: int = typer.Option(
        EF_SEARCH,
        "--ef-search",
        help=helped(f"HNSW: search breadth (raised until recall@10 ≥ {TARGET_RECALL}).", bounds.EF_SEARCH),
    ),
    threads: int = ThreadsOpt,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing index file (or Milvus collection)."
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Build an index from embeddings (exact by default): a file (--out) or a Milvus collection (--store)."""
    from .. import console
    from ..index.manage import IndexBuildOptions, create_gallery

    options = IndexBuildOptions(
        embeddings,
        out=out,
        store=store,
        collection=collection,
        kind=kind,
        nlist=nlist,
        nprobe=nprobe,
        m=m,
        ef_search=ef_search,
        threads=threads,
        overwrite=overwrite,
    )
    built = create_gallery(options, log=console.info, progress=progress_bar)
    for note in built.notes:  # what a Milvus build tidied first: a stopped build's temporaries
        console.info(note)
    if json_out:
        console.print_json(built.to_dict())
    _report_built(built)


def _report_built(built: IndexBuildResult) -> None:
    from .. import console
    from ..files import human_size

    facts, seconds = built.facts, built.seconds
    if facts["recall_at_10"] is not None:
        console.info(f"recall@10 vs exact: {facts['recall_at_10']:.3f} ({_params(facts['params'])})")
    if built.path is not None:
        console.success(
            f"{facts['kind']} index of {facts['count']:,} items → {built.path} "
            f"({human_size(built.size_bytes)}) in {seconds:.1f} s"
        )
        console.info(f"next: invedge search {built.path} QUERY.jpg --k 5{_served_model(facts)}")
        return
    store, collection = facts["store"], facts["collection"]
    console.success(
        f"{facts['kind']} collection {collection} of {facts['count']:,} items → {store} in {seconds:.1f} s"
    )
    console.info(
        f"next: invedge search --store {store} --collection {collection} QUERY.jpg --k 5{_served_model(facts)}"
    )


def _served_model(facts: dict) -> str:
    """` --model triton:URL` for a gallery embedded through a Triton server (search needs the server
    named: there is no local model to find), else nothing."""
    from ..backends.triton import served_model

    served = served_model((facts.get("model") or {}).get("path"))
    return f" --model {served}" if served else ""


def add(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="[INDEX] EMBEDDINGS...",
        help="Index file to extend (rewritten atomically; not with --store), then embeddings folders to add.",
        show_default=False,
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Add the items of embeddings folders (same model; new ids) to an index or a Milvus collection.

    In a Milvus collection an id already held is replaced (an upsert), so re-adding is idempotent.
    """
    from .. import console
    from ..files import human_size
    from ..index.manage import IndexAddOptions, add_to_gallery

    index, embeddings = (None, paths) if store is not None else (paths[0], paths[1:])
    options = IndexAddOptions(embeddings, index=index, store=store, collection=collection)
    changed = add_to_gallery(options, progress=progress_bar)
    if json_out:
        console.print_json(changed.to_dict())
    size = f" ({human_size(changed.size_bytes)})" if changed.path is not None else ""
    console.success(
        f"added {changed.count:,} items → {changed.where.name} now holds {changed.facts['count']:,}{size}"
    )


def remove(
    args: list[str] = typer.Argument(
        None,
        metavar="[INDEX] IDS...",
        help="Index file (rewritten atomically; not with --store), then ids to remove (as shown by search "
        "and 'index info --ids').",
        show_default=False,
    ),
    ids_file: Path | None = typer.Option(None, "--ids-file", help="A text file with one id per line."),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Remove items from an index (or a Milvus collection) by id."""
    from .. import console
    from ..index.manage import IndexRemoveOptions, remove_from_gallery

    args = list(args or [])
    index, ids = (Path(args[0]), args[1:]) if store is None and args else (None, args)
    options = IndexRemoveOptions(ids, index=index, store=store, collection=collection, ids_file=ids_file)
    changed = remove_from_gallery(options)
    if json_out:
        console.print_json(changed.to_dict())
    console.success(
        f"removed {changed.count:,} items → {changed.where.name} now holds {changed.facts['count']:,}"
    )
    if not changed.facts["count"]:
        console.info(
            f"the gallery is empty; add items with: invedge index add {changed.where.flags} EMBEDDINGS"
        )


def info(
    index_path: Path | None = typer.Argument(
        None, metavar="[INDEX]", help="Index file (not with --store).", show_default=False
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    show_ids: bool = typer.Option(False, "--ids", help="Also list every id."),
    json_out: bool = JsonOpt,
) -> None:
    """Show what an index (or a Milvus collection) holds: kind, size, embedding space, model, recall."""
    from .. import console
    from ..index.manage import IndexInfoOptions, gallery_info

    options = IndexInfoOptions(index_path, store=store, collection=collection, show_ids=show_ids)
    found = gallery_info(options)
    for line in found.warnings:
        console.warn(line)
    if json_out:
        console.print_json(found.to_dict())
        return
    console.out.print(_info_table(found.facts))
    for item in found.facts.get("ids", []):
        console.out.print(item, highlight=False)


def _info_table(facts: dict):
    """The facts of `index info` as rows: where, kind, items, space, model, recall (Milvus: state)."""
    from rich.table import Table

    from ..files import human_size

    table = Table(show_header=False, box=None)
    if "store" in facts:
        table.add_row("store", f"{facts['store']} (collection {facts['collection']})")
    else:
        table.add_row("file", f"{facts['path']} ({human_size(facts['size_bytes'])})")
    table.add_row("kind", facts["kind"] + (f" ({_params(facts['params'])})" if facts["params"] else ""))
    table.add_row(
        "items", f"{facts['count']:,} × {facts['dim']}" + (" (empty)" if not facts["count"] else "")
    )
    table.add_row("space", str(facts["space"].get("space_id", "")))
    if model := facts["model"]:
        table.add_row("model", f"{model.get('path', '?')} ({model.get('precision', '?')})")
    if facts["recall_at_10"] is not None:
        table.add_row("recall@10", f"{facts['recall_at_10']:.3f} vs exact")
    if "store" in facts:
        table.add_row("state", facts["status"])
        for line in facts["temporaries"]:
            table.add_row("leftover", line)
    return table


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed")
