"""`invedge index build|add|remove|info`: a searchable gallery made from embeddings folders."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .. import bounds
from ..bounds import helped
from ..index.settings import EF_SEARCH, HNSW_M, KINDS, TARGET_RECALL
from .options import CollectionOpt, JsonOpt, StoreOpt, ThreadsOpt

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
    from ..embeddings import load_embeddings
    from ..errors import ConfigError
    from ..files import human_size
    from ..index import Index, writing
    from ..milvus_store.address import gallery_flags

    if kind not in KINDS:
        raise ConfigError(f"Invalid --kind {kind!r}. Only {', '.join(KINDS)} are supported")
    for bound, value in ((bounds.NLIST, nlist), (bounds.NPROBE, nprobe), (bounds.HNSW_M, m),
                         (bounds.EF_SEARCH, ef_search), (bounds.THREADS, threads)):  # fmt: skip
        if value is not None:
            bound.check(value)
    if (out is None) == (store is None):
        raise ConfigError(
            "index build writes an index file or a Milvus collection: give exactly one of --out and --store",
            "Pass --out photos.index, or --store milvus:photos.db --collection photos",
        )
    address = gallery_flags(store, collection)
    if address is not None:
        _build_store(embeddings, address, collection, kind, m, ef_search, nlist, nprobe, overwrite, json_out)
        return
    assert out is not None
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
    from ..embeddings import load_embeddings
    from ..errors import ConfigError
    from ..files import human_size
    from ..index import Index, writing
    from ..milvus_store.address import gallery_flags

    address = gallery_flags(store, collection)
    if address is not None:
        _add_store(paths, address, collection, json_out)
        return
    if len(paths) < 2:
        raise ConfigError(
            "index add needs the index file and at least one embeddings folder",
            "Run: invedge index add INDEX EMBEDDINGS... (or --store S --collection C EMBEDDINGS...)",
        )
    index_path, embeddings = paths[0], paths[1:]
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
    from ..errors import ConfigError
    from ..index import Index, writing
    from ..milvus_store.address import gallery_flags

    args = list(args or [])
    address = gallery_flags(store, collection)
    if address is None:
        if not args:
            raise ConfigError("index remove needs the index file", "Run: invedge index remove INDEX IDS...")
        index_path, args = Path(args[0]), args[1:]
    wanted = args
    if ids_file is not None:
        wanted += read_ids_file(ids_file)
    if not wanted:
        raise ConfigError("no ids to remove", "Pass ids or --ids-file FILE")
    if address is not None:
        _remove_store(wanted, address, collection, json_out)
        return
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
    index_path: Path | None = typer.Argument(
        None, metavar="[INDEX]", help="Index file (not with --store).", show_default=False
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    show_ids: bool = typer.Option(False, "--ids", help="Also list every id."),
    json_out: bool = JsonOpt,
) -> None:
    """Show what an index (or a Milvus collection) holds: kind, size, embedding space, model, recall."""
    from rich.table import Table

    from .. import console
    from ..errors import ConfigError
    from ..files import human_size
    from ..index import Index
    from ..milvus_store.address import gallery_flags

    address = gallery_flags(store, collection)
    if address is not None:
        if index_path is not None:
            raise ConfigError(
                f"with --store, index info takes no INDEX file (got {index_path})",
                "Pass either INDEX or --store S --collection C",
            )
        _info_store(address, collection, show_ids, json_out)
        return
    if index_path is None:
        raise ConfigError("index info needs the index file", "Run: invedge index info INDEX (or --store ...)")
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


# --- a gallery in Milvus (--store, milvus_store/) --------------------------------------------------


def _open(address, collection: str, incomplete_ok: bool = False):
    from ..milvus_store import open_gallery

    return open_gallery(address, collection, incomplete_ok=incomplete_ok)


def _bar(total: int, what: str):
    """A progress callback for big writes (`on_progress(done, total)`), and the bar to close."""
    from .. import console

    if total <= 2000:
        return None, None
    bar = console.progress(transient=True)
    task = bar.add_task(what, total=total)
    bar.start()
    return (lambda done, _total: bar.update(task, completed=done)), bar


def _build_store(
    embeddings, address, collection, kind, m, ef_search, nlist, nprobe, overwrite, json_out
) -> None:
    from .. import console
    from ..embeddings import load_embeddings
    from ..milvus_store import build_gallery

    started = time.perf_counter()
    emb = load_embeddings(embeddings)
    console.info(
        f"indexing {len(emb):,} embeddings ({emb.dim}-d) from {embeddings} as {kind} "
        f"into {collection} in {address.shown}"
    )
    on_progress, bar = _bar(len(emb), "writing")
    try:
        gallery = build_gallery(
            emb,
            address,
            collection,
            kind,
            m=m,
            ef_search=None if ef_search == EF_SEARCH else ef_search,
            nlist=nlist,
            nprobe=nprobe,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    finally:
        if bar is not None:
            bar.stop()
    for note in gallery.notes:  # what the build tidied first: a stopped build's temporaries
        console.info(note)
    with gallery:
        seconds = time.perf_counter() - started
        facts = gallery.info()
        if json_out:
            console.print_json(facts | {"seconds": round(seconds, 3)})
        if gallery.recall_at_10 is not None:
            console.info(f"recall@10 vs exact: {gallery.recall_at_10:.3f} ({_params(gallery.params)})")
        console.success(
            f"{kind} collection {collection} of {facts['count']:,} items → {address.shown} in {seconds:.1f} s"
        )
        console.info(
            f"next: invedge search --store {address.shown} --collection {collection} QUERY.jpg --k 5"
        )


def _add_store(embeddings: list[Path], address, collection: str, json_out: bool) -> None:
    from .. import console
    from ..embeddings import load_embeddings

    loaded = [load_embeddings(folder) for folder in embeddings]
    with _open(address, collection) as gallery:
        for folder, emb in zip(embeddings, loaded, strict=True):  # every check before any write
            gallery.check_space(emb.space_id, adding=str(folder))
        added = 0
        for folder, emb in zip(embeddings, loaded, strict=True):
            on_progress, bar = _bar(len(emb), f"adding {folder}")
            try:
                added += gallery.add(
                    emb.vectors,
                    emb.ids,
                    space_id=emb.space_id,
                    locations=emb.locations(),
                    source=str(folder),
                    on_progress=on_progress,
                    recorded=True,
                )
            finally:
                if bar is not None:
                    bar.stop()
        facts = gallery.info()
    if json_out:
        console.print_json(facts | {"added": added})
    console.success(f"added {added:,} items → {collection} in {address.shown} now holds {facts['count']:,}")


def _remove_store(ids: list[str], address, collection: str, json_out: bool) -> None:
    from .. import console

    with _open(address, collection) as gallery:
        removed = gallery.remove(ids, recorded=True)
        facts = gallery.info()
    if json_out:
        console.print_json(facts | {"removed": removed})
    console.success(
        f"removed {removed:,} items → {collection} in {address.shown} now holds {facts['count']:,}"
    )
    if not facts["count"]:
        console.info(
            f"the gallery is empty; add items with: invedge index add --store {address.shown} "
            f"--collection {collection} EMBEDDINGS"
        )


def _info_store(address, collection: str, show_ids: bool, json_out: bool) -> None:
    from rich.table import Table

    from .. import console
    from ..errors import InvedgeError

    with _open(address, collection, incomplete_ok=True) as gallery:
        facts = gallery.info() | {"temporaries": gallery.temporaries()}
        if show_ids:
            facts["ids"] = list(gallery.iter_ids())
        try:
            gallery.check_complete()
            unusable = None
        except InvedgeError as exc:
            unusable = str(exc)
    for line in ([unusable] if unusable else []) + facts["stopped_writes"]:
        console.warn(line)
    if json_out:
        console.print_json(facts)
        return
    table = Table(show_header=False, box=None)
    table.add_row("store", f"{facts['store']} (collection {facts['collection']})")
    table.add_row("kind", facts["kind"] + (f" ({_params(facts['params'])})" if facts["params"] else ""))
    table.add_row(
        "items", f"{facts['count']:,} × {facts['dim']}" + (" (empty)" if not facts["count"] else "")
    )
    table.add_row("space", str(facts["space"].get("space_id", "")))
    model = facts["model"]
    if model:
        table.add_row("model", f"{model.get('path', '?')} ({model.get('precision', '?')})")
    if facts["recall_at_10"] is not None:
        table.add_row("recall@10", f"{facts['recall_at_10']:.3f} vs exact")
    table.add_row("state", facts["status"])
    for line in facts["temporaries"]:
        table.add_row("leftover", line)
    console.out.print(table)
    for item in facts.get("ids", []):
        console.out.print(item, highlight=False)
