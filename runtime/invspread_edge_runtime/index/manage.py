"""What `invedge index build|add|remove|info` do, to an index file or a Milvus collection.

Each takes options that refuse a bad value when made (the command's one-line ConfigError) and
returns a result whose `to_dict()` is the command's `--json`:

    result = create_gallery(IndexBuildOptions(Path("photos.emb"), out=Path("photos.index")))
    print(result.to_dict()["count"])

The gallery is the index file of `index` (or `out`), or the collection `collection` in `store`
(milvus:FILE or milvus://HOST:PORT: milvus_store/, imported only then). `log(line)` hears what a
build is about to do; `progress(total, what)` gives the callback of a big Milvus write.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError, DataError, InvedgeError
from ..gallery import IN_MEMORY, Where
from ..milvus_store.address import gallery_flags
from .settings import EF_SEARCH, HNSW_M, KINDS

OnProgress = Callable[[int, int], None]
# (total, what) → a context holding the `on_progress(done, total)` of one write (None: no progress)
Progress = Callable[[int, str], AbstractContextManager[OnProgress | None]]
Log = Callable[[str], None]


def no_progress(total: int, what: str) -> AbstractContextManager[OnProgress | None]:
    return contextlib.nullcontext(None)


def _quiet(line: str) -> None:
    pass


# --- build ------------------------------------------------------------------------------------------

BUILD_BOUNDS = {
    "nlist": bounds.NLIST,
    "nprobe": bounds.NPROBE,
    "m": bounds.HNSW_M,
    "ef_search": bounds.EF_SEARCH,
    "threads": bounds.THREADS,
}


@dataclass(frozen=True)
class IndexBuildOptions:
    """A gallery to build from an embeddings folder: the index file `out`, or `collection` in `store`.

    `kind`: flat (exact), ivf or hnsw. IVF: `nlist` lists (default ≈ 4·√N), `nprobe` searched
    (default: tuned to the target recall); HNSW: `m` links per node, `ef_search` to start from.
    """

    embeddings: Path
    out: Path | None = None
    store: str | None = None
    collection: str | None = None
    kind: str = KINDS[0]
    nlist: int | None = None
    nprobe: int | None = None
    m: int = HNSW_M
    ef_search: int = EF_SEARCH
    threads: int = 0
    overwrite: bool = False  # replace an existing index file or collection
    address: Any = field(init=False, default=None, repr=False)  # milvus_store.StoreAddress of `store`

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"Invalid --kind {self.kind!r}. Only {', '.join(KINDS)} are supported")
        check_bounds(BUILD_BOUNDS, vars(self))
        if (self.out is None) == (self.store is None):
            raise ConfigError(
                "index build writes an index file or a Milvus collection: give exactly one of --out and --store",
                "Pass --out photos.index, or --store milvus:photos.db --collection photos",
            )
        object.__setattr__(self, "address", gallery_flags(self.store, self.collection))


@dataclass
class IndexBuildResult:
    """The gallery built: its `info()` facts, how long it took, and where it went."""

    facts: dict[str, Any]  # kind, count, dim, space, model, params, recall_at_10 (Milvus: and where)
    seconds: float
    path: Path | None = None  # the index file written (None: a Milvus collection)
    size_bytes: int = 0  # of the index file
    notes: list[str] = field(default_factory=list)  # what a Milvus build tidied first

    def to_dict(self) -> dict[str, Any]:
        """What `invedge index build --json` prints."""
        written = {"path": str(self.path), "size_bytes": self.size_bytes} if self.path is not None else {}
        return self.facts | written | {"seconds": round(self.seconds, 3)}


def create_gallery(
    options: IndexBuildOptions, *, log: Log = _quiet, progress: Progress = no_progress
) -> IndexBuildResult:
    """Build the gallery `options` names from its embeddings folder (an approximate one is tuned)."""
    if options.address is not None:
        return _build_in_store(options, log, progress)
    from ..embeddings.reader import load_embeddings
    from .gallery import Index
    from .index_file import writing

    assert options.out is not None
    out = options.out
    check_out(out, options.overwrite)  # before the work; again under the lock
    started = time.perf_counter()
    emb = load_embeddings(options.embeddings)
    with writing(out):  # a second build of the same file waits here, then sees the first one's
        check_out(out, options.overwrite)
        log(f"indexing {len(emb):,} embeddings ({emb.dim}-d) from {options.embeddings} as {options.kind}")
        index = Index.from_embeddings(
            emb,
            options.kind,
            nlist=options.nlist,
            nprobe=options.nprobe,
            m=options.m,
            ef_search=options.ef_search,
            threads=options.threads,
        )
        size = index.save(out)  # atomic: the old file stays whole until the new one replaces it
    return IndexBuildResult(index.info(), time.perf_counter() - started, out, size)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an index file `out` that is a folder, or exists without `overwrite`."""
    if out.is_dir():
        raise InvedgeError(f"{out} is a folder", "--out is the index file to write, e.g. photos.index")
    if out.exists() and not overwrite:
        raise InvedgeError(f"{out} already exists", "Pass --overwrite to replace it")


def _build_in_store(options: IndexBuildOptions, log: Log, progress: Progress) -> IndexBuildResult:
    from ..embeddings.reader import load_embeddings
    from ..milvus_store.build import build_gallery

    started = time.perf_counter()
    emb = load_embeddings(options.embeddings)
    log(
        f"indexing {len(emb):,} embeddings ({emb.dim}-d) from {options.embeddings} as {options.kind} "
        f"into {options.collection} in {options.address.shown}"
    )
    assert options.collection is not None
    with progress(len(emb), "writing") as on_progress:
        gallery = build_gallery(
            emb,
            options.address,
            options.collection,
            options.kind,
            m=options.m,
            ef_search=None if options.ef_search == EF_SEARCH else options.ef_search,
            nlist=options.nlist,
            nprobe=options.nprobe,
            overwrite=options.overwrite,
            on_progress=on_progress,
        )
    with gallery:
        seconds = time.perf_counter() - started
        return IndexBuildResult(gallery.info(), seconds, notes=list(gallery.notes))


# --- add, remove --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexAddOptions:
    """Embeddings folders (same model, new ids) to add to the index file `index` or to `collection`
    in `store` (where an id already held is replaced: an upsert)."""

    embeddings: Sequence[Path]  # kept as a tuple
    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    address: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        address = gallery_flags(self.store, self.collection)
        if address is None and (self.index is None or not self.embeddings):
            raise ConfigError(
                "index add needs the index file and at least one embeddings folder",
                "Run: invedge index add INDEX EMBEDDINGS... (or --store S --collection C EMBEDDINGS...)",
            )
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "embeddings", tuple(Path(folder) for folder in self.embeddings))


@dataclass(frozen=True)
class IndexRemoveOptions:
    """Ids to remove from the index file `index` or from `collection` in `store`; `ids_file`: a text
    file of more ids, one a line (read by `remove_from_gallery`)."""

    ids: Sequence[str]  # kept as a tuple
    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    ids_file: Path | None = None
    address: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        address = gallery_flags(self.store, self.collection)
        if address is None and self.index is None:
            raise ConfigError("index remove needs the index file", "Run: invedge index remove INDEX IDS...")
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "ids", tuple(self.ids))


@dataclass
class IndexChange:
    """A gallery after an add or a remove: its `info()` facts, and how many items changed."""

    facts: dict[str, Any]
    change: str  # "added" or "removed"
    count: int
    path: Path | None = None  # the index file rewritten (None: a Milvus collection)
    size_bytes: int = 0  # of the index file
    where: Where = IN_MEMORY  # the gallery changed, as messages name it

    def to_dict(self) -> dict[str, Any]:
        """What `invedge index add --json` (or remove) prints."""
        where = {"path": str(self.path)} if self.path is not None else {}
        return self.facts | where | {self.change: self.count}


def add_to_gallery(options: IndexAddOptions, *, progress: Progress = no_progress) -> IndexChange:
    """Add the items of `options.embeddings`; every folder is read and checked before any is added."""
    from ..embeddings.reader import load_embeddings

    loaded = [load_embeddings(folder) for folder in options.embeddings]
    if options.address is not None:
        return _add_in_store(options, loaded, progress)
    from .gallery import changing

    assert options.index is not None
    with changing(options.index) as change:  # from the read to the rename: no other add/remove in between
        index = change.index
        before = len(index)
        for folder, emb in zip(options.embeddings, loaded, strict=True):
            index.add(
                emb.vectors, emb.ids, space_id=emb.space_id, locations=emb.locations(), source=str(folder)
            )
    added = len(index) - before
    return IndexChange(index.info(), "added", added, options.index, change.size_bytes, index.where())


def _add_in_store(options: IndexAddOptions, loaded: list[Any], progress: Progress) -> IndexChange:
    from ..milvus_store.gallery import open_gallery

    assert options.collection is not None
    with open_gallery(options.address, options.collection) as gallery:
        for folder, emb in zip(options.embeddings, loaded, strict=True):  # every check before any write
            gallery.check_space(emb.space_id, adding=str(folder))
        added = 0
        for folder, emb in zip(options.embeddings, loaded, strict=True):
            with progress(len(emb), f"adding {folder}") as on_progress:
                added += gallery.add(
                    emb.vectors,
                    emb.ids,
                    space_id=emb.space_id,
                    locations=emb.locations(),
                    source=str(folder),
                    on_progress=on_progress,
                    recorded=True,
                )
        return IndexChange(gallery.info(), "added", added, where=gallery.where())


def remove_from_gallery(options: IndexRemoveOptions) -> IndexChange:
    """Remove the items of `options.ids` (and its ids file); an unknown id removes nothing."""
    wanted = list(options.ids)
    if options.ids_file is not None:
        wanted += read_ids_file(options.ids_file)
    if not wanted:
        raise ConfigError("no ids to remove", "Pass ids or --ids-file FILE")
    if options.address is not None:
        from ..milvus_store.gallery import open_gallery

        assert options.collection is not None
        with open_gallery(options.address, options.collection) as gallery:
            removed = gallery.remove(wanted, recorded=True)
            return IndexChange(gallery.info(), "removed", removed, where=gallery.where())
    from .gallery import changing

    assert options.index is not None
    with changing(options.index) as change:  # the last item too: an empty gallery is a valid index
        removed = change.index.remove(wanted)
    return IndexChange(change.index.info(), "removed", removed, options.index, where=change.index.where())


def read_ids_file(path: Path) -> list[str]:
    """One id per line (UTF-8); blank lines are skipped."""
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


# --- info ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexInfoOptions:
    """The gallery to describe: the index file `index`, or `collection` in `store` (also one whose
    build has not finished); `show_ids`: list every id too."""

    index: Path | None = None
    store: str | None = None
    collection: str | None = None
    show_ids: bool = False
    address: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        address = gallery_flags(self.store, self.collection)
        if address is not None and self.index is not None:
            raise ConfigError(
                f"with --store, index info takes no INDEX file (got {self.index})",
                "Pass either INDEX or --store S --collection C",
            )
        if address is None and self.index is None:
            raise ConfigError(
                "index info needs the index file", "Run: invedge index info INDEX (or --store ...)"
            )
        object.__setattr__(self, "address", address)


@dataclass
class IndexInfo:
    """What a gallery holds (`to_dict()`: its facts), and what is wrong with a Milvus one."""

    facts: dict[str, Any]  # info(); a file: path, size_bytes; Milvus: temporaries; with show_ids: ids
    warnings: list[str] = field(default_factory=list)  # why it cannot be used, writes that stopped

    def to_dict(self) -> dict[str, Any]:
        """What `invedge index info --json` prints."""
        return self.facts


def gallery_info(options: IndexInfoOptions) -> IndexInfo:
    """Describe the gallery `options` names: kind, size, embedding space, model, recall, state."""
    if options.address is not None:
        return _info_in_store(options)
    from .gallery import Index

    assert options.index is not None
    index = Index.load(options.index)
    facts = index.info() | {"path": str(options.index), "size_bytes": options.index.stat().st_size}
    if options.show_ids:
        facts["ids"] = index.ids
    return IndexInfo(facts)


def _info_in_store(options: IndexInfoOptions) -> IndexInfo:
    from ..milvus_store.gallery import open_gallery

    assert options.collection is not None
    with open_gallery(options.address, options.collection, incomplete_ok=True) as gallery:
        facts = gallery.info() | {"temporaries": gallery.temporaries()}
        if options.show_ids:
            facts["ids"] = list(gallery.iter_ids())
        try:
            gallery.check_complete()
            unusable = None
        except InvedgeError as exc:
            unusable = str(exc)
    return IndexInfo(facts, ([unusable] if unusable else []) + facts["stopped_writes"])
