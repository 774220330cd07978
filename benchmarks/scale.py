"""Scale out, measured: Milvus Lite search against faiss on one gallery, `embed --ray` against one process.

    python benchmarks/scale.py --model runs/fmnist/export                 # 100k × 128 gallery, 10 000 JPEGs
    python benchmarks/scale.py --model EXPORT --gallery 2000 --images 64  # a quick check

Search: one gallery of random unit vectors (N × d) in the file index (`Index`, faiss flat: exact,
the reference) and in Milvus Lite collections (`build_gallery`: FLAT, and HNSW with ef tuned to
recall@10 ≥ 0.95 like the file index), each searched through the same call the CLI makes, one query
at a time (median latency of `--queries`) and as one batch of them. recall@10 of every row against
the exact answer on the same queries; build time (insert, index, tuning) per row.
Embed: the same JPEGs (Fashion-MNIST test images enlarged to `--jpeg-size`, as in
embed_throughput.py) embedded by `embed_images` (what `invedge embed` runs) without and with `ray="auto"` (`--ray auto`: a
Ray started here on every core), one after the other in this process. Rates over the embedding loop
(the manifest's seconds: for Ray, actor start included), over the whole call (Ray's own start
included) and steady (from the first batch back to the last); the largest difference between the two
folders' vectors.
Then the sizing arithmetic of README's "Scaling out" section, from the per-node rates measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: make_jpegs is embed_throughput's

FORMAT = "invspread-edge/scale/1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an export folder or ONNX model (embed rows)")
    p.add_argument("--gallery", type=int, default=100_000, help="gallery size for the search rows")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=100, help="single-query searches timed per row")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--images", type=int, default=10_000, help="JPEGs embedded by each embed row")
    p.add_argument("--jpeg-size", type=int, default=64)
    p.add_argument("--skip", default="", help="comma list of parts to leave out: search, embed")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    skip = {s for s in args.skip.split(",") if s}
    report: dict = {
        "format": FORMAT,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(["python", "benchmarks/scale.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    with tempfile.TemporaryDirectory(prefix="invedge-scale-") as tmp:
        if "embed" not in skip:  # first: Milvus Lite's background index threads outlive its galleries
            report["embed"] = bench_embed(args, Path(tmp))
        if "search" not in skip:
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
    import numpy as np

    from invspread_edge_runtime.embeddings.reader import EmbeddingSet
    from invspread_edge_runtime.index.gallery import Index
    from invspread_edge_runtime.milvus_store.build import build_gallery

    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((args.gallery, args.dim), dtype=np.float32))
    queries = unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    ids = [f"item-{i:09d}" for i in range(args.gallery)]
    space = {"space_id": "scale-bench", "embedding_dim": args.dim, "checkpoint_sha256": ""}
    emb = EmbeddingSet(tmp / "gallery.emb", vectors, ids, {"space": space, "dim": args.dim, "root": ""})
    print(f"search: {args.gallery:,} × {args.dim} gallery, {args.queries} queries, top-{args.k}")

    started = time.perf_counter()
    flat = Index.build(vectors, ids, space, "flat")
    truth = flat.search(queries, args.k).indices
    rows = [
        search_row("faiss flat (file index)", flat, queries, args.k, truth, time.perf_counter() - started)
    ]
    reference = rows[0]["single_ms"]
    store = f"milvus:{tmp / 'scale.milvus.db'}"
    for kind in ("flat", "hnsw"):
        started = time.perf_counter()
        with build_gallery(emb, store, f"scale_{kind}", kind) as gallery:
            built = time.perf_counter() - started
            rows.append(search_row(f"Milvus Lite {kind.upper()}", gallery, queries, args.k, truth, built))
    for row in rows:
        row["vs_faiss_flat"] = round(row["single_ms"] / reference, 1)
        print(
            f"  {row['method']:<26} {row['single_ms']:>9.2f} ms/query  batch {row['batch_ms']:>9.1f} ms  "
            f"recall@10 {row['recall_at_10']:.3f}  build {row['build_s']:>6.1f} s  "
            f"{row['vs_faiss_flat']:>7.1f}× faiss flat"
        )
    return {"gallery": args.gallery, "dim": args.dim, "queries": args.queries, "k": args.k, "rows": rows}


def search_row(method: str, gallery, queries, k: int, truth, built: float) -> dict:
    """Median single-query latency, one batch of every query, and recall@k against `truth` (row ids)."""
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
        "build_s": round(built, 2),
        "searcher": result.searcher,
    }


def recall(found: list[list[str]], truth) -> float:
    """Share of the exact top-k found: `truth` holds the exact rows, and row r is the id 'item-r'."""
    hits = 0
    for row, exact in zip(found, truth, strict=True):
        wanted = {f"item-{int(r):09d}" for r in exact}
        hits += len(wanted.intersection(row))
    return hits / max(1, truth.size)


def unit(x):
    import numpy as np

    return x / np.linalg.norm(x, axis=1, keepdims=True).astype(np.float32)


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


if __name__ == "__main__":
    sys.exit(main())
