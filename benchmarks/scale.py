"""Scale out, measured: a Milvus server and Milvus Lite against faiss on one gallery, `embed --ray`.

    python benchmarks/scale.py --model runs/fmnist/export                      # 100k × 128, 10 000 JPEGs
    python benchmarks/scale.py --model EXPORT --sizes 100000,1000000           # and a 1M-item gallery
    python benchmarks/scale.py --skip embed --sizes 2000 --queries 20          # a quick check, no model

Search: for each size in `--sizes`, one gallery of random unit vectors (N × d), the same for every row:
- faiss flat, the file index (`Index`): exact, the reference; its file's size;
- a Milvus server (PyPI's `milvus`, started by scripts/milvus_server_local.py, a fresh one per row:
  its data folder and ports of its own) with a FLAT collection and an HNSW one (ef tuned to
  recall@10 ≥ 0.95 as `invedge index build` tunes it); the resident memory (RSS) of the server's
  process group empty and with the collection loaded;
- Milvus Lite (`milvus:FILE.db`, the Python engine in this process) with a FLAT collection.
Every Milvus collection is built by `build_gallery` and searched through `open_gallery`, the calls
`invedge index build` and `invedge search --store` make: one query at a time (median latency of
`--queries`, after one unmeasured query) and as one batch of them; the same single queries made by
pymilvus alone with consistency "Eventually" (the engine's time: a Strong read, what a collection
of invedge's gets, waits for the server's next time tick). recall@10 of every row against the exact
answer on the same queries, and again once the server reports every row indexed and the collection
is loaded again (a server builds the index in the background and answers from an interim index
until then); build time per row, split into insert, index (flush and load) and tuning.
Galleries over 100 000 items get the faiss and the server FLAT rows only unless `--every-row`: Milvus
Lite scans in Python (~0.1 s a query at 100k, seconds at 1M) inside this process, and the server
builds a 1M-node HNSW graph in the background for many minutes on a small machine before tuning.
Embed: the same JPEGs (Fashion-MNIST test images enlarged to `--jpeg-size`, as in
embed_throughput.py) embedded by `embed_images` (what `invedge embed` runs) without and with `ray="auto"` (`--ray auto`: a
Ray started here on every core), one after the other in this process. Rates over the embedding loop
(the manifest's seconds: for Ray, actor start included), over the whole call (Ray's own start
included) and steady (from the first batch back to the last); the largest difference between the two
folders' vectors.
Then the sizing arithmetic of README's "Scaling out" section, from the per-node figures measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from invspread_edge_runtime.bounds import Bound, check_bounds, helped
from invspread_edge_runtime.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: make_jpegs is embed_throughput's
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # how the Milvus server starts

FORMAT = "invspread-edge/scale/2"
REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "milvus_server_local.py"
PARTS = ("server", "lite", "embed")  # what --skip can leave out (the faiss row is the reference)
FULL_ROWS_MAX = 100_000  # larger galleries: faiss and the server's FLAT only, unless --every-row
COLLECTION = "scale"
# ceilings of what is typed: a slip (an extra 0) must not fill the memory or the disk before it shows
LIMITS = {
    "sizes": Bound("--sizes", 1, 10_000_000),  # each gallery: N × dim float32 in memory, twice (faiss)
    "dim": Bound("--dim", 1, 4096),
    "queries": Bound("--queries", 1, 100_000),  # also searched as one batch
    "k": Bound("--k", 1, 16_384),  # Milvus' largest top-k
    "images": Bound("--images", 1, 1_000_000),  # JPEGs written to a temporary folder, embedded twice
    "jpeg_size": Bound("--jpeg-size", 1, 4096),  # pixels per side
}
GALLERY_FLOATS_MAX = 2_000_000_000  # N × dim of one gallery: 8 GB of float32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="an export folder or ONNX model (embed rows)")
    p.add_argument(
        "--sizes",
        default="100000",
        help=helped("comma list of gallery sizes, e.g. 100000,1000000; each", LIMITS["sizes"]),
    )
    p.add_argument("--every-row", action="store_true", help="every search row at every size (slow at 1M)")
    p.add_argument("--dim", type=int, default=128, help=helped("vector dimension", LIMITS["dim"]))
    p.add_argument(
        "--queries",
        type=int,
        default=100,
        help=helped("single-query searches timed per row", LIMITS["queries"]),
    )
    p.add_argument("--k", type=int, default=10, help=helped("neighbours per search", LIMITS["k"]))
    p.add_argument(
        "--images",
        type=int,
        default=10_000,
        help=helped("JPEGs embedded by each embed row", LIMITS["images"]),
    )
    p.add_argument("--jpeg-size", type=int, default=64, help=helped("side of the JPEGs", LIMITS["jpeg_size"]))
    p.add_argument("--skip", default="", help=f"comma list of parts to leave out: {', '.join(PARTS)}")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = sorted(args.skip - set(PARTS))
    if unknown:
        p.error(f"unknown part in --skip: {', '.join(unknown)} (only {', '.join(PARTS)})")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        p.error(f"--sizes takes whole numbers separated by commas, not {args.sizes!r}")
    check_limits(p, args)
    if not args.sizes or min(args.sizes) <= args.k:
        p.error(f"--sizes: every gallery needs more than k = {args.k} items")
    if "embed" not in args.skip and args.model is None:
        p.error("the embed rows need --model EXPORT (or pass --skip embed)")
    return args


def check_limits(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """p.error (one line, exit 2) for the first value past its LIMITS bound or a gallery too large."""
    try:
        check_bounds(LIMITS, vars(args))
    except ConfigError as exc:
        p.error(str(exc))
    if args.sizes and max(args.sizes) * args.dim > GALLERY_FLOATS_MAX:
        p.error(
            f"--sizes × --dim is more than {GALLERY_FLOATS_MAX:,} floats (8 GB). Use a smaller size or dim"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    report: dict = {
        "format": FORMAT,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(["python", "benchmarks/scale.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    with tempfile.TemporaryDirectory(prefix="invedge-scale-") as tmp:
        if "embed" not in args.skip:  # first: Milvus Lite's background index threads outlive its galleries
            report["embed"] = bench_embed(args, Path(tmp))
        report["search"] = bench_search(args, Path(tmp))
    report["sizing"] = sizing(report)
    for line in report["sizing"]["lines"]:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# --- search -------------------------------------------------------------------------------------


def bench_search(args: argparse.Namespace, tmp: Path) -> dict:
    """Every size's rows; Milvus Lite's last (its background threads outlive its galleries)."""
    queries = unit(_rng(1).standard_normal((args.queries, args.dim), dtype="float32"))
    server_missing = None if "server" in args.skip else server_module_or_reason()
    results = []
    lite_later = []
    for size in args.sizes:
        full = args.every_row or size <= FULL_ROWS_MAX
        gallery = make_gallery(size, args.dim, tmp)
        print(f"search: {size:,} × {args.dim} gallery, {args.queries} queries, top-{args.k}")
        faiss_row, truth = file_index_row(gallery, queries, args.k, tmp)
        rows = [show(faiss_row, faiss_row)]
        if "server" not in args.skip:
            for kind in ("flat", "hnsw") if full else ("flat",):
                row = server_row(kind, gallery, queries, args.k, truth, tmp, server_missing)
                rows.append(show(row, faiss_row))
        results.append({"gallery": size, "rows": rows})
        if "lite" not in args.skip and full:
            lite_later.append((rows, gallery, truth))
    for rows, gallery, truth in lite_later:
        print(f"search: {len(gallery.ids):,} × {args.dim} gallery, Milvus Lite")
        store = f"milvus:{tmp / f'lite-{len(gallery.ids)}.milvus.db'}"
        row = milvus_row("Milvus Lite FLAT", gallery, store, "flat", queries, args.k, truth)
        rows.append(show(row, rows[0]))
    return {"dim": args.dim, "queries": args.queries, "k": args.k, "sizes": results}


def make_gallery(size: int, dim: int, tmp: Path):
    """`size` random unit vectors as an embeddings set (what `invedge embed` writes), ids item-ROW."""
    from invspread_edge_runtime.embeddings.reader import EmbeddingSet

    vectors = unit(_rng(0).standard_normal((size, dim), dtype="float32"))
    ids = [f"item-{i:09d}" for i in range(size)]
    space = {"space_id": "scale-bench", "embedding_dim": dim, "checkpoint_sha256": ""}
    return EmbeddingSet(tmp / f"gallery-{size}.emb", vectors, ids, {"space": space, "dim": dim, "root": ""})


def file_index_row(gallery, queries, k: int, tmp: Path) -> tuple[dict, Any]:
    """faiss flat, the file index: the reference row, and the exact top-k rows of every query."""
    from invspread_edge_runtime.index.gallery import Index

    started = time.perf_counter()
    index = Index.build(gallery.vectors, gallery.ids, gallery.space, "flat")
    built = time.perf_counter() - started
    truth = index.search(queries, k).indices
    row = search_row("faiss flat (file index)", index, queries, k, truth)
    row["build_s"] = round(built, 2)
    row["file_mb"] = round(index.save(tmp / f"gallery-{len(gallery.ids)}.index") / 1e6, 1)
    return row, truth


def server_row(kind: str, gallery, queries, k: int, truth, tmp: Path, missing: str | ModuleType) -> dict:
    """A Milvus server of its own for this row: its memory empty and with the collection loaded."""
    method = f"Milvus server {kind.upper()}"
    if isinstance(missing, str):
        return {"method": method, "skipped": missing}
    server = missing.MilvusServer(tmp / f"milvus-server-{len(gallery.ids)}-{kind}")
    started = time.perf_counter()
    server.start()
    before = os.environ.get("MILVUS_TOKEN")
    os.environ["MILVUS_TOKEN"] = server.token  # its client port needs it: how the runtime's client logs in
    try:
        start_s, empty = time.perf_counter() - started, group_rss_mb(server.proc.pid)
        row = milvus_row(method, gallery, server.store, kind, queries, k, truth)
        row |= {"rss_mb": group_rss_mb(server.proc.pid), "rss_empty_mb": empty, "start_s": round(start_s, 1)}
    finally:
        server.stop()
        if before is None:
            os.environ.pop("MILVUS_TOKEN", None)
        else:
            os.environ["MILVUS_TOKEN"] = before
    return row


def milvus_row(method: str, gallery, store: str, kind: str, queries, k: int, truth) -> dict:
    """`build_gallery` (timed: insert, index, tuning), then searched through `open_gallery`."""
    from invspread_edge_runtime.milvus_store import tuning
    from invspread_edge_runtime.milvus_store.build import build_gallery
    from invspread_edge_runtime.milvus_store.gallery import open_gallery

    inserted: list[float] = []
    tuned: list[float] = []
    with timing(tuning, "tune", tuned):
        started = time.perf_counter()
        with build_gallery(
            gallery, store, COLLECTION, kind, on_progress=lambda *_: inserted.append(time.perf_counter())
        ) as built:
            build_s = time.perf_counter() - started
            settings = {"ef_search": built.params.get("ef_search"), "build_recall_at_10": built.recall_at_10}
    with open_gallery(store, COLLECTION) as opened:
        row = search_row(method, opened, queries, k, truth)
        row["engine_single_ms"] = engine_single_ms(opened, queries, k)
        row |= index_state(opened)
        if "pending_index_rows" in row:
            row["recall_at_10_reloaded"] = reloaded_recall(opened, queries, k, truth)
    insert_s = inserted[-1] - started
    row |= {
        "build_s": round(build_s, 2),
        "insert_s": round(insert_s, 2),
        "index_s": round(build_s - insert_s - sum(tuned), 2),
        "tuning_s": round(sum(tuned), 2),
        **{key: value for key, value in settings.items() if value is not None},
    }
    return row


@contextlib.contextmanager
def timing(module: ModuleType, name: str, spent: list[float]) -> Iterator[None]:
    """Time every call of `module.name` (a step inside a library call) into `spent`."""
    original: Callable = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def search_row(method: str, gallery, queries, k: int, truth) -> dict:
    """Median single-query latency, one batch of every query, and recall@k against `truth` (row ids)."""
    gallery.search(queries[:1], k)  # unmeasured: connections and caches warmed
    single = []
    found = []
    for q in range(len(queries)):
        t = time.perf_counter()
        result = gallery.search(queries[q : q + 1], k)
        single.append(time.perf_counter() - t)
        found.append(result.ids[0])
    t = time.perf_counter()
    gallery.search(queries, k)
    batch = time.perf_counter() - t
    return {
        "method": method,
        "single_ms": round(1000 * statistics.median(single), 3),
        "batch_ms": round(1000 * batch, 3),
        "recall_at_10": round(recall(found, truth), 4),
        "searcher": result.searcher,
    }


def engine_single_ms(gallery, queries, k: int) -> float:
    """Median of the same single-query searches made by pymilvus alone, consistency "Eventually": the
    engine's time, without the gallery's count call and without a Strong read's wait for the next
    time tick (a Milvus server's proxy.timeTickInterval, 200 ms by default)."""
    from invspread_edge_runtime.milvus_store import collection as schema

    params = schema.search_params(gallery.kind, gallery.params, k, False, len(gallery))
    times = []
    for q in range(len(queries)):
        t = time.perf_counter()
        gallery.client.search(
            gallery.collection,
            data=list(queries[q : q + 1]),
            limit=k,
            anns_field="vector",
            search_params=params,
            consistency_level="Eventually",
        )
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def index_state(gallery) -> dict:
    """How much of the collection the server had indexed when searched. A Milvus server builds the
    index after the load, in the background, and until then (and until the collection is loaded
    again) answers from an interim index (queryNode.segcore.interimIndex: IVF, nprobe 16) whatever
    the search parameters say."""
    with contextlib.suppress(Exception):  # Milvus Lite describes no progress
        described = gallery.client.describe_index(gallery.collection, "vector")
        if "pending_index_rows" in described:
            return {
                "indexed_rows": int(described["indexed_rows"]),
                "pending_index_rows": int(described["pending_index_rows"]),
            }
    return {}


def reloaded_recall(gallery, queries, k: int, truth, wait_s: float = 600) -> float:
    """recall@k once the server reports every row indexed and the collection is loaded again: the
    index's own recall, to set beside the row's (equal when the build waited for the index)."""
    client, name = gallery.client, gallery.collection
    deadline = time.monotonic() + wait_s
    while client.describe_index(name, "vector")["pending_index_rows"] and time.monotonic() < deadline:
        time.sleep(1)
    client.release_collection(name)
    client.load_collection(name)
    found = gallery.search(queries, k).ids
    return round(recall(found, truth), 4)


def recall(found: list[list[str]], truth) -> float:
    """Share of the exact top-k found: `truth` holds the exact rows, and row r is the id 'item-r'."""
    hits = 0
    for row, exact in zip(found, truth, strict=True):
        wanted = {f"item-{int(r):09d}" for r in exact}
        hits += len(wanted.intersection(row))
    return hits / max(1, truth.size)


def show(row: dict, reference: dict) -> dict:
    """Print a row as soon as it is measured (a long run shows its progress); returns it."""
    if "skipped" in row:
        print(f"  {row['method']:<26} skipped: {row['skipped']}", flush=True)
        return row
    row["vs_faiss_flat"] = round(row["single_ms"] / reference["single_ms"], 1)
    extra = f"  file {row['file_mb']:.0f} MB" if "file_mb" in row else ""
    if "rss_mb" in row:
        extra = f"  RSS {row['rss_mb']:.0f} MB (empty {row['rss_empty_mb']:.0f})"
    if "engine_single_ms" in row:
        extra += f"  engine alone {row['engine_single_ms']:.2f} ms/query"
    if "ef_search" in row:
        extra += f"  ef {row['ef_search']}"
    if "recall_at_10_reloaded" in row:
        extra += f"  recall@10 {row['recall_at_10_reloaded']:.3f} once indexed and reloaded"
    print(
        f"  {row['method']:<26} {row['single_ms']:>9.2f} ms/query  batch {row['batch_ms']:>9.1f} ms  "
        f"recall@10 {row['recall_at_10']:.3f}  build {row['build_s']:>6.1f} s  "
        f"{row['vs_faiss_flat']:>6.1f}× faiss flat{extra}",
        flush=True,
    )
    return row


def server_module_or_reason() -> ModuleType | str:
    """scripts/milvus_server_local.py (scripts/ is no package), or why the server cannot run here."""
    if not SERVER_SCRIPT.is_file():
        return f"{SERVER_SCRIPT} is missing"
    import milvus_server_local as module  # scripts/ is on sys.path (above)

    return module.available() or module


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the process group `pgid` (/proc), in MB."""
    total_kb = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
                status = (stat.parent / "status").read_text()
                total_kb += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
    return round(total_kb / 1024, 1)


def unit(x):
    import numpy as np

    return x / np.linalg.norm(x, axis=1, keepdims=True).astype(np.float32)


def _rng(seed: int):
    import numpy as np

    return np.random.default_rng(seed)


# --- embed --------------------------------------------------------------------------------------


def bench_embed(args: argparse.Namespace, tmp: Path) -> dict:
    import numpy as np
    from embed_throughput import make_jpegs

    from invspread_edge_runtime.embeddings.reader import load_embeddings

    folder = make_jpegs(tmp / "images", args.images, args.jpeg_size)
    print(f"embed: {args.images:,} JPEGs of {args.jpeg_size} px with {args.model}")
    os.environ.pop("RAY_ADDRESS", None)  # --ray auto: a Ray started here, on every core
    rows = {
        "single": embed_row(args.model, folder, tmp / "single.emb"),
        "ray": embed_row(args.model, folder, tmp / "ray.emb", ray="auto"),
    }
    a, b = load_embeddings(tmp / "single.emb"), load_embeddings(tmp / "ray.emb")
    same_ids = a.ids == b.ids
    diff = float(np.abs(np.asarray(a.vectors, np.float32) - np.asarray(b.vectors, np.float32)).max())
    ratios = {
        f"ray_vs_single{suffix}": round(rows["ray"][key] / rows["single"][key], 3)
        if rows["ray"][key] and rows["single"][key]
        else None  # steady needs two batches back
        for suffix, key in (("", "images_per_s"), ("_total", "images_per_s_total"), ("_steady", "steady"))
    }
    for name, row in rows.items():
        print(
            f"  {name:<7} {row['images_per_s']:>7.0f} img/s over the embedding loop, "
            f"{row['images_per_s_total']:>7.0f} over the whole call, {row['steady'] or 0:>7.0f} from the "
            f"first batch back to the last ({row['backend']})"
        )
    print(
        f"  ray / single: {ratios['ray_vs_single']:.2f}× (loop), {ratios['ray_vs_single_total']:.2f}× "
        f"(whole call, Ray's start included), {ratios['ray_vs_single_steady'] or 0:.2f}× (steady)"
    )
    print(f"  same ids in the same order: {same_ids}; largest vector difference {diff:.1e}")
    return {
        "images": args.images,
        "jpeg_size": args.jpeg_size,
        "rows": rows,
        **ratios,
        "same_ids": same_ids,
        "max_abs_diff": diff,
    }


def embed_row(model: Path, folder: Path, out: Path, ray: str | None = None) -> dict:
    """One `embed_images` run (what `invedge embed [--ray]` runs): its rates, and when batches came back."""
    from invspread_edge_runtime.embeddings.corpus import EmbedOptions
    from invspread_edge_runtime.embeddings.job import embed_images

    marks: list[tuple[float, int]] = []
    started = time.perf_counter()
    run = embed_images(
        EmbedOptions(model, [folder], out, ray=ray),
        on_progress=lambda done, _: marks.append((time.perf_counter(), done)),
    )
    total = time.perf_counter() - started
    manifest = run.manifest
    done = manifest["count"] + manifest["failed_count"]
    (t1, d1), (t2, d2) = next(m for m in marks if m[1] > 0), marks[-1]
    return {
        "count": manifest["count"],
        "seconds": manifest["seconds"],
        "total_seconds": round(total, 3),
        "images_per_s": round(done / max(manifest["seconds"], 1e-9), 1),
        "images_per_s_total": round(done / max(total, 1e-9), 1),
        "steady": round((d2 - d1) / (t2 - t1), 1) if t2 > t1 else None,
        "first_batch_s": round(t1 - started, 2),
        "backend": run.backend.name,
        "ray": manifest.get("ray"),
    }


# --- sizing -------------------------------------------------------------------------------------

GALLERY_ITEMS = 100_000_000
CORPUS_IMAGES = 1_000_000_000
NODE_MEMORY_GB = 64  # usable memory of one Milvus query node assumed by the arithmetic
HNSW_M = 32  # the file index's default links per node, as built here


def sizing(report: dict) -> dict:
    """README's arithmetic: memory and nodes for a 100M gallery, node-hours for a 1B-image embedding job."""
    dim = report.get("search", {}).get("dim", 128)
    vectors_gb = GALLERY_ITEMS * dim * 4 / 1e9
    graph_gb = GALLERY_ITEMS * HNSW_M * 2 * 4 / 1e9  # level-0 links of HNSW: 2·M int32 per vector
    ids_gb = GALLERY_ITEMS * 64 / 1e9  # id + location strings, ~64 bytes each
    total_gb = vectors_gb + graph_gb + ids_gb
    nodes = -(-total_gb // (NODE_MEMORY_GB * 0.8))  # 20 % headroom per node
    lines = [
        "sizing (arithmetic from the figures above, not a measurement of a cluster):",
        f"  100M × {dim} gallery, HNSW M={HNSW_M}: vectors {vectors_gb:.0f} GB + graph {graph_gb:.0f} GB + "
        f"ids/paths {ids_gb:.0f} GB = {total_gb:.0f} GB → {nodes:.0f} query nodes of {NODE_MEMORY_GB} GB "
        "(x2 with a replica)",
    ]
    out: dict = {"gallery_gb": round(total_gb, 1), "query_nodes": int(nodes), "lines": lines}
    for kind in ("FLAT", "HNSW"):
        measured = server_sizing(report.get("search", {}), kind)
        if measured:
            lines.append(measured.pop("line"))
            out[f"server_{kind.lower()}"] = measured
    embed = report.get("embed")
    if embed:
        rate = embed["rows"]["ray"]["images_per_s"]
        node_hours = CORPUS_IMAGES / rate / 3600
        lines.append(
            f"  1B images at {rate:,.0f} img/s per node (this {os.cpu_count()}-CPU box, --ray): "
            f"{node_hours:,.0f} node-hours → {node_hours / 100:,.1f} h on 100 such nodes"
        )
        out |= {"embed_rate_per_node": rate, "node_hours_1b": round(node_hours)}
    return out


def server_sizing(search: dict, kind: str) -> dict | None:
    """The server's resident memory per item and one-query latency in `kind`, carried to GALLERY_ITEMS.

    Per item: the loaded RSS over the empty server's, at the largest gallery measured. HNSW's rows
    stop at smaller galleries (FULL_ROWS_MAX), where the server's fixed costs weigh more: its figure is
    the largest FLAT one plus what HNSW added over FLAT at the same size (the graph)."""
    rows = {
        (result["gallery"], row["method"].rsplit(" ", 1)[1]): row
        for result in search.get("sizes", [])
        for row in result["rows"]
        if row["method"].startswith("Milvus server") and "rss_mb" in row
    }
    sizes = sorted(size for size, held in rows if held == kind)
    if not sizes:
        return None
    size = sizes[-1]
    row = rows[(size, kind)]
    per_item = _per_item(row, size)
    flats = sorted(n for n, held in rows if held == "FLAT")
    how = f"at {size:,} items"
    if kind == "HNSW" and (size, "FLAT") in rows and flats[-1] > size:
        graph = per_item - _per_item(rows[(size, "FLAT")], size)
        per_item = _per_item(rows[(flats[-1], "FLAT")], flats[-1]) + graph
        how = f"FLAT's at {flats[-1]:,} items + the graph's {graph:,.0f} B measured at {size:,}"
    gallery_gb = per_item * GALLERY_ITEMS / 1e9
    nodes = max(1, -(-gallery_gb // (NODE_MEMORY_GB * 0.8)))
    engine = row["engine_single_ms"]
    latency = f"one query {row['single_ms']:.1f} ms at {size:,} items ({engine:.1f} ms the engine alone)"
    if kind == "FLAT":
        latency += f", a scan: ~{engine * GALLERY_ITEMS / size / 1000:.0f} s at 100M on these cores"
    else:
        latency += f", recall@10 {row['recall_at_10']:.3f} at ef {row.get('ef_search')}"
        if "recall_at_10_reloaded" in row:
            latency += f" ({row['recall_at_10_reloaded']:.3f} once indexed and reloaded)"
    line = (
        f"  measured, Milvus server {kind}: {per_item:,.0f} B/item resident ({how}) → 100M: "
        f"{gallery_gb:,.0f} GB → {nodes:.0f} query nodes of {NODE_MEMORY_GB} GB; {latency}"
    )
    return {
        "bytes_per_item": round(per_item),
        "gallery_gb_100m": round(gallery_gb, 1),
        "query_nodes": int(nodes),
        "at_items": size,
        "line": line,
    }


def _per_item(row: dict, size: int) -> float:
    """Resident bytes per item: the server's RSS with the collection loaded over its RSS empty."""
    return max(0.0, row["rss_mb"] - row["rss_empty_mb"]) * 1e6 / size


if __name__ == "__main__":
    sys.exit(main())
