"""Exact and approximate top-k search: the runtime's paths against faiss and naive numpy, one process.

    python benchmarks/search.py                                   # 10k, 100k, 1M galleries, d = 128
    python benchmarks/search.py --sizes 10000 --repeat 1          # a quick check
    python benchmarks/search.py --real runs/fmnist/export         # also real embeddings (Fashion-MNIST)
    python benchmarks/search.py --real photos.emb                 # ... or an embeddings folder

For each gallery size, 1 000 queries (random unit vectors, or held-out real embeddings), top-10 by
inner product. Rows:
- faiss flat: `faiss.IndexFlatIP.search` (the reference);
- runtime default: `Index.search` on a flat index (faiss underneath when installed);
- numpy fallback: `topk.exact_topk` (blocked product + threshold merge, used without faiss);
- numpy naive: every score, then `argsort` per row (timed on `--naive-queries` queries, scaled);
- faiss ivf / hnsw: built through `Index.build` (search settings tuned to recall@10 ≥ 0.95),
  recall@10 against exact on the same queries, speed-up against faiss flat.
Times are the median of `--repeat` runs. The machine's limits are measured first: sgemm
GFLOP/s (exact search is a matrix product, 2·Q·N·d flops) and memory bandwidth (the gallery is
read once per query block).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma list of gallery sizes")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dim", type=int, default=128, help="dimension of the random vectors")
    p.add_argument("--threads", type=int, default=2, help="threads for BLAS and faiss alike")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per row (median)")
    p.add_argument("--naive-queries", type=int, default=200, help="queries timed for the naive row")
    p.add_argument("--ann", default="ivf,hnsw", help="approximate kinds to measure ('' for none)")
    p.add_argument("--ann-max", type=int, default=1_000_000, help="skip ivf/hnsw above this size")
    p.add_argument(
        "--real", type=Path, default=None, help="an embeddings folder, or a model to embed Fashion-MNIST"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy loads its BLAS
    import numpy as np

    faiss = _faiss(args.threads)
    limits = machine_limits(np)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"sgemm {limits['sgemm_gflops']:.0f} GFLOP/s, memory {limits['bandwidth_gbs']:.1f} GB/s; "
        f"faiss {getattr(faiss, '__version__', 'absent')}, numpy {np.__version__}"
    )
    rows: list[dict] = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = np.random.default_rng(0)
    for n in sizes:
        gallery = unit(rng.standard_normal((n, args.dim), dtype=np.float32))
        queries = unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
        rows += bench_size(np, faiss, args, "random", gallery, queries, limits)
        del gallery
    if args.real is not None:
        vectors = real_embeddings(np, args.real)
        queries, pool = vectors[: args.queries], vectors[args.queries :]
        for n in sizes:
            if n > len(pool):
                print(
                    f"real: {len(pool):,} embeddings available, skipping {n:,} (showing {len(pool):,} instead)"
                )
                n = len(pool)
                if any(r["data"] == "real" and r["n"] == n for r in rows):
                    continue
            rows += bench_size(np, faiss, args, "real", pool[:n], queries, limits)
    print_table(rows)
    if args.json:
        args.json.write_text(
            json.dumps({"limits": limits, "threads": args.threads, "rows": rows}, indent=2) + "\n"
        )
        print(f"wrote {args.json}")


def bench_size(np, faiss, args, data: str, gallery, queries, limits: dict) -> list[dict]:
    from invspread_edge_runtime.index.gallery import Index
    from invspread_edge_runtime.index.topk import exact_topk, naive_topk

    n, d = gallery.shape
    k, q = args.k, len(queries)
    flops = 2.0 * q * n * d
    space = {"space_id": "bench", "embedding_dim": d}
    ids = [str(i) for i in range(n)]
    out: list[dict] = []

    def row(method: str, seconds: float, reference: float | None, **extra) -> dict:
        r = {
            "data": data,
            "n": n,
            "d": d,
            "method": method,
            "ms": round(seconds * 1000, 1),
            "vs_faiss_flat": round(seconds / reference, 2) if reference else None,
            "gflops": round(flops / seconds / 1e9, 1),
            **extra,
        }
        out.append(r)
        print(
            f"  {data} n={n:>9,} {method:<28} {r['ms']:>10.1f} ms  ×{r['vs_faiss_flat'] or 1:.2f} of faiss flat"
        )
        return r

    truth_idx = None
    reference = None
    if faiss is not None:
        flat = faiss.IndexFlatIP(d)
        flat.add(gallery)
        reference = timed(lambda: flat.search(queries, k), args.repeat)
        truth_idx = flat.search(queries, k)[1]
        row("faiss flat", reference, None)
        del flat
    index = Index.build(gallery, ids, space, threads=args.threads)
    seconds = timed(lambda: index.search(queries, k), args.repeat)
    row(f"runtime default ({index.search(queries[:1], 1).searcher})", seconds, reference)
    seconds = timed(lambda: exact_topk(queries, gallery, k), args.repeat)
    found = exact_topk(queries, gallery, k)[1]
    if truth_idx is None:
        truth_idx = found
    row("numpy fallback", seconds, reference, recall_at_k=recall(found, truth_idx))
    nq = min(args.naive_queries, q)
    per_query = timed(lambda: naive_topk(queries[:nq], gallery, k), 1) / nq
    row("numpy naive", per_query * q, reference, timed_queries=nq)
    if faiss is not None and n <= args.ann_max:
        for kind in [a for a in args.ann.split(",") if a]:
            started = time.perf_counter()
            ann = Index.build(gallery, ids, space, kind, threads=args.threads)
            build_s = time.perf_counter() - started
            seconds = timed(lambda ann=ann: ann.search(queries, k), args.repeat)
            found = ann.search(queries, k).indices
            params = {key: v for key, v in ann.params.items() if key != "seed"}
            row(
                f"faiss {kind}",
                seconds,
                reference,
                recall_at_k=recall(found, truth_idx),
                speedup=round(reference / seconds, 1) if reference else None,
                build_s=round(build_s, 2),
                params=params,
            )
            del ann
    best = flops / (limits["sgemm_gflops"] * 1e9)
    for r in out:
        r["compute_bound_ms"] = round(best * 1000, 1)
    return out


def recall(found, truth) -> float:
    k = truth.shape[1]
    return round(
        sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True))
        / (k * len(truth)),
        4,
    )


def timed(fn, repeat: int) -> float:
    fn()  # warm-up: faiss/BLAS thread pools, first-touch of buffers
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_limits(np) -> dict:
    """Peak sgemm GFLOP/s (2048³) and memory bandwidth (read + write of 256 MB arrays), best of 3."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    b = a.copy()
    gemm = min(_once(lambda: a @ b) for _ in range(3))
    src = np.ones(64 << 20, dtype=np.float32)
    dst = np.empty_like(src)
    copy = min(_once(lambda: np.copyto(dst, src)) for _ in range(3))
    return {
        "sgemm_gflops": round(2 * 2048**3 / gemm / 1e9, 1),
        "bandwidth_gbs": round(2 * src.nbytes / copy / 1e9, 1),
    }


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def unit(x):
    import numpy as np

    return x / np.linalg.norm(x, axis=1, keepdims=True)


def real_embeddings(np, source: Path):
    """An embeddings folder's vectors, or Fashion-MNIST (train + test) embedded with a model."""
    from invspread_edge_runtime.embeddings.layout import MANIFEST
    from invspread_edge_runtime.embeddings.reader import load_embeddings

    if (source / MANIFEST).is_file():
        vectors = np.asarray(load_embeddings(source).vectors, dtype=np.float32)
    else:
        from invspread_edge_runtime.embedder import Embedder
        from invspread_edge_runtime.evaluation.datasets import open_dataset

        with Embedder(source) as emb:
            print(f"real: embedding Fashion-MNIST with {emb.info.name} ({Path(emb.info.model_path).name})")
            parts = []
            for split in ("train", "test"):
                images = open_dataset("fashion-mnist", split).images
                for i in range(0, len(images), 512):
                    parts.append(emb.embed_uint8(images[i : i + 512]))
            vectors = np.concatenate(parts)
    order = np.random.default_rng(1).permutation(len(vectors))
    return np.ascontiguousarray(vectors[order])


def _faiss(threads: int):
    try:
        import faiss
    except ImportError:
        print("faiss is not installed: faiss rows are skipped, ratios are missing")
        return None
    faiss.omp_set_num_threads(threads)
    return faiss


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="top-k search (ratios: time / faiss flat; lower is faster)")
    for col in ("data", "n", "method", "ms", "× faiss flat", "GFLOP/s", "recall@k", "speed-up", "params"):
        table.add_column(col, justify="left" if col in ("data", "method", "params") else "right")
    for r in rows:
        table.add_row(
            r["data"],
            f"{r['n']:,}",
            r["method"],
            f"{r['ms']:,.1f}",
            f"{r['vs_faiss_flat']:.2f}"
            if r["vs_faiss_flat"]
            else "1.00"
            if r["method"] == "faiss flat"
            else "",
            f"{r['gflops']:.0f}" if r["method"].startswith(("faiss flat", "runtime", "numpy")) else "",
            f"{r['recall_at_k']:.3f}" if "recall_at_k" in r else "",
            f"{r['speedup']:.1f}×" if r.get("speedup") else "",
            ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items()),
        )
    Console(width=200).print(table)
    if rows:
        print(
            f"compute bound (sgemm peak) for 1 000 × N × {rows[0]['d']}: "
            + ", ".join(
                f"{r['n']:,}: {r['compute_bound_ms']:.0f} ms" for r in rows if r["method"] == "numpy fallback"
            )
        )


if __name__ == "__main__":
    sys.exit(main())
