"""Time and memory of the explore verbs' library calls on a large synthetic embedding set.

    python benchmarks/explore.py                                   # 1 000 000 × 128; the map on 100 000
    python benchmarks/explore.py --sizes 100000,1000000 --steps dedup,cluster --dedup-modes exact
    python benchmarks/explore.py --sizes 3000 --map-size 800 --tsne-size 500 --k 8 --count 20   # toy

The vectors (seeded, made the same way in every step): `--clusters` unit centres, each item its
centre plus Gaussian noise (cosine about 0.7 to its centre, 0.5 to its cluster's other items,
about 0 across clusters), renormalised; then `--planted` of the items replaced by a near copy of
another item (cosine about 0.99), so that the self-join has duplicates to find.
Steps, each in a process of its own (so each peak is its own: `ru_maxrss`, the largest resident
set the process had, the vectors included; "vectors" is the resident set once they were made):
- dedup: explore's self-join `pairs_above(vectors, --threshold)`, exact (blocked numpy matrix
  products over the upper triangle, explore/neighbours.py: what `invedge dedup` does up to 300 000
  items) and approximate (faiss HNSW neighbours, its default beyond);
  the pairs found beside the planted ones;
- cluster: `cluster_items` k-means with `--k` (faiss when installed), NMI against the generating
  clusters;
- select: `select` greedy k-center of `--count` items, with the coverage it reports;
- map: `layout_2d` on the first `--map-size` items for UMAP and PCA, t-SNE on the first `--tsne-size`
  (the size up to which `auto` would pick it), no cache.
Writes `--json` and `--md` (docs/figures/explore.{json,md} by default). The exact self-join is
quadratic: at 1 000 000 items it is 10¹² dot products, most of an hour on two cores (100 000 items:
about a minute); t-SNE on 5 000 points (layout2d.TSNE_LIMIT, the most `auto` gives it) about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from invspread_edge_runtime.bounds import DUP_THRESHOLD, SELECT_COUNT, Bound, check_bounds, helped
from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.explore.layout2d import TSNE_LIMIT

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "figures"
FORMAT = "invspread-edge/explore-bench/1"
STEPS = ("dedup", "cluster", "select", "map")
MAP_METHODS = ("umap", "tsne", "pca")
DEDUP_MODES = ("exact", "approximate")
NOISE = 1.0  # norm of an item's noise around its unit centre
COPY_NOISE = 0.1  # norm of a planted copy's noise around its item
LIMITS = {
    "sizes": Bound("--sizes", 1, 10_000_000),  # N × dim float32 in memory in each step's process
    "dim": Bound("--dim", 2, 4096),
    "clusters": Bound("--clusters", 1, 100_000),
    "planted": Bound("--planted", 0, 0.5),
    "threshold": DUP_THRESHOLD,
    "k": Bound("--k", 2, 100_000),
    "count": SELECT_COUNT,
    "map_size": Bound("--map-size", 4, 2_000_000),
    "tsne_size": Bound("--tsne-size", 0, 200_000),
}
FLOATS_MAX = 2_000_000_000  # N × dim: 8 GB of float32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", default="1000000", help=helped("comma list of item counts; each", LIMITS["sizes"])
    )
    p.add_argument("--dim", type=int, default=128, help=helped("vector dimension", LIMITS["dim"]))
    p.add_argument(
        "--clusters", type=int, default=100, help=helped("generating clusters", LIMITS["clusters"])
    )
    p.add_argument(
        "--planted",
        type=float,
        default=0.01,
        help=helped("share of items made near copies", LIMITS["planted"]),
    )
    p.add_argument("--threshold", type=float, default=0.95, help=helped("dedup: cosine", DUP_THRESHOLD))
    p.add_argument("--k", type=int, default=100, help=helped("cluster: k-means k", LIMITS["k"]))
    p.add_argument("--count", type=int, default=1000, help=helped("select: items picked", SELECT_COUNT))
    p.add_argument(
        "--map-size", type=int, default=100_000, help=helped("map: items laid out", LIMITS["map_size"])
    )
    p.add_argument(
        "--tsne-size",
        type=int,
        default=TSNE_LIMIT,
        help=helped("map: items for t-SNE (0: none; default: the most auto gives it)", LIMITS["tsne_size"]),
    )
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of: {', '.join(STEPS)}")
    p.add_argument(
        "--dedup-modes",
        default=",".join(DEDUP_MODES),
        help="the dedup step's self-joins: exact (blocked numpy products), approximate (faiss HNSW neighbours)",
    )
    p.add_argument(
        "--map-methods",
        default=",".join(MAP_METHODS),
        help=f"the map step's layouts: {', '.join(MAP_METHODS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=FIGURES / "explore.json")
    p.add_argument("--md", type=Path, default=FIGURES / "explore.md")
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)  # one step in this process (internal)
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes takes whole numbers separated by commas, not {args.sizes!r}")
    args.step_list = [s.strip() for s in args.steps.split(",") if s.strip()]
    args.method_list = [s.strip() for s in args.map_methods.split(",") if s.strip()]
    args.mode_list = [s.strip() for s in args.dedup_modes.split(",") if s.strip()]
    for option, given, known in (
        ("--steps", args.step_list, STEPS),
        ("--map-methods", args.method_list, MAP_METHODS),
        ("--dedup-modes", args.mode_list, DEDUP_MODES),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            p.error(
                f"unknown value in {option}: {', '.join(unknown) or 'none given'} (only {', '.join(known)})"
            )
    try:
        check_bounds(LIMITS, vars(args))
    except ConfigError as exc:
        p.error(str(exc))
    if not args.sizes:
        p.error("--sizes is empty. Give item counts, e.g. 1000000")
    if max(args.sizes) * args.dim > FLOATS_MAX:
        p.error(f"--sizes × --dim is more than {FLOATS_MAX:,} floats (8 GB). Use a smaller size or dim")
    if min(args.sizes) <= max(args.k, args.count):
        p.error(f"--sizes: every size needs more items than --k {args.k} and --count {args.count}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step:
        print(json.dumps(run_step(args)), flush=True)
        return 0
    report: dict[str, Any] = {
        "format": FORMAT,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(
            ["python", "benchmarks/explore.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "data": {
            "dim": args.dim,
            "clusters": args.clusters,
            "planted": args.planted,
            "seed": args.seed,
            "vectors": "centre + Gaussian noise of norm 1, renormalised; planted copies at noise 0.1",
        },
        "rows": [],
    }
    for size in args.sizes:
        for step in args.step_list:
            for method in {"map": args.method_list, "dedup": args.mode_list}.get(step, [None]):
                row = child(argv if argv is not None else sys.argv[1:], step, size, method, args)
                if row is not None:
                    report["rows"].append(row)
                    print(line(row), flush=True)
    markdown = to_markdown(report)
    print(markdown)
    for path, text in ((args.json, json.dumps(report, indent=2) + "\n"), (args.md, markdown + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0 if all("error" not in row for row in report["rows"]) else 1


def child(argv: list[str], step: str, size: int, method: str | None, args: argparse.Namespace) -> dict | None:
    """One step in a fresh process (its own peak memory); its row, or None when the step is not run."""
    items = size
    if step == "map":
        items = min(size, args.tsne_size if method == "tsne" else args.map_size)
        if items < 4:
            return None
    call = [sys.executable, str(Path(__file__).resolve()), *argv, "--step", f"{step}:{method or ''}:{items}"]
    proc = subprocess.run(call, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    label = f"{step} ({method})" if method else step
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        missing = "pip install" in tail[0]  # an optional package (umap-learn, scikit-learn) not installed
        return {"step": label, "items": items, "skipped" if missing else "error": tail[0]}
    return {"step": label, **json.loads(proc.stdout.strip().splitlines()[-1])}


# --- one step, in its own process ---------------------------------------------------------------


def run_step(args: argparse.Namespace) -> dict:
    step, method, items = args.step.split(":")
    vectors, truth, copies = make_vectors(int(items), args.dim, args.clusters, args.planted, args.seed)
    base = rss_mb()
    started = time.perf_counter()
    extra = STEP_CALLS[step](vectors, truth, copies, args, method)
    seconds = time.perf_counter() - started
    return {
        "items": int(items),
        "seconds": round(seconds, 2),
        "vectors_mb": base,
        "peak_mb": peak_mb(),
        **extra,
    }


def make_vectors(n: int, dim: int, clusters: int, planted: float, seed: int, block: int = 65_536):
    """(vectors, generating cluster of each, planted (copy, of) pairs), made in blocks: no float64 copy."""
    rng = np.random.default_rng([seed, 7])
    centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    truth = rng.integers(clusters, size=n)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (NOISE / np.sqrt(dim))
        vectors[start:stop] = unit(centres[truth[start:stop]] + noise)
    count = int(planted * n)
    copy = rng.choice(n, count, replace=False)
    of = rng.integers(n, size=count)
    keep = ~np.isin(of, copy)  # a copy of an item that is itself overwritten would copy a copy
    copy, of = copy[keep], of[keep]
    noise = rng.standard_normal((len(copy), dim), dtype=np.float32) * (COPY_NOISE / np.sqrt(dim))
    vectors[copy] = unit(vectors[of] + noise)
    truth[copy] = truth[of]
    return vectors, truth, np.stack([copy, of], axis=1)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def items_of(vectors: np.ndarray):
    """The vectors as explore's items (what every verb opens)."""
    from invspread_edge_runtime.explore.items import ExploreItems

    return ExploreItems.from_vectors(vectors, source="explore benchmark")


def step_dedup(vectors, truth, copies, args, method) -> dict:
    from invspread_edge_runtime.explore.neighbours import pairs_above

    i, j, _ = pairs_above(vectors, args.threshold, exact=method == "exact")
    found = {(int(a), int(b)) for a, b in zip(i, j, strict=True)}
    planted = {(min(int(a), int(b)), max(int(a), int(b))) for a, b in copies}
    return {
        "threshold": args.threshold,
        "pairs": len(found),
        "planted": len(planted),
        "planted_found": len(found & planted),
    }


def step_cluster(vectors, truth, copies, args, method) -> dict:
    from invspread_edge_runtime.evaluation.accuracy import normalized_mutual_info
    from invspread_edge_runtime.explore.cluster import ClusterOptions, cluster_items

    clustering = cluster_items(items_of(vectors), ClusterOptions(k=args.k, seed=args.seed))
    assigned = np.asarray(clustering.assignments)
    return {"k": args.k, "nmi_vs_generating": round(normalized_mutual_info(truth, assigned), 4)}


def step_select(vectors, truth, copies, args, method) -> dict:
    from invspread_edge_runtime.explore.select import SelectOptions, select_items

    picked = select_items(items_of(vectors), SelectOptions(count=args.count))
    return {"count": len(picked), "coverage": picked.to_dict()["coverage"]}


def step_map(vectors, truth, copies, args, method) -> dict:
    from invspread_edge_runtime.explore.layout2d import layout_2d

    layout = layout_2d(items_of(vectors), method, seed=args.seed, cache=False)
    return {"method": layout.method, "note": layout.note}


STEP_CALLS = {"dedup": step_dedup, "cluster": step_cluster, "select": step_select, "map": step_map}


def rss_mb() -> float:
    """This process's resident set now (/proc), in MB."""
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return round(int(text.split()[1]) / 1024, 1)
    return 0.0


def peak_mb() -> float:
    """The largest resident set this process has had (Linux: ru_maxrss in kB), in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- the table ----------------------------------------------------------------------------------


def line(row: dict) -> str:
    if "error" in row or "skipped" in row:
        return f"  {row['step']:<16} {row['items']:>10,} items  {_not_run(row)}"
    return (
        f"  {row['step']:<16} {row['items']:>10,} items  {row['seconds']:>8.1f} s  peak {row['peak_mb']:>8,.0f} MB "
        f"(vectors {row['vectors_mb']:,.0f} MB)  {detail(row)}"
    )


def detail(row: dict) -> str:
    if "pairs" in row:
        return f"{row['pairs']:,} pairs ≥ {row['threshold']}, {row['planted_found']:,} of {row['planted']:,} planted"
    if "nmi_vs_generating" in row:
        return f"k = {row['k']}, NMI vs the generating clusters {row['nmi_vs_generating']:.3f}"
    if "coverage" in row:
        cover = row["coverage"]
        return (
            f"{row['count']:,} picked; cosine distance to the nearest pick: max {cover['max_distance']}, "
            f"mean {cover['mean_distance']}"
        )
    if "method" in row:
        return f"{row['method']}{': ' + row['note'] if row.get('note') else ''}"
    return ""


def _not_run(row: dict) -> str:
    return f"FAILED: {row['error']}" if "error" in row else f"skipped: {row['skipped']}"


def to_markdown(report: dict) -> str:
    data = report["data"]
    lines = [
        f"explore: {report['machine']}; {data['dim']}-d unit vectors, {data['clusters']} clusters, "
        f"{data['planted']:.0%} planted near copies (seed {data['seed']})",
        "",
        f"`{report['command']}`",
        "",
        "Each step runs in a process of its own: peak = the most memory it held resident (ru_maxrss), "
        "the vectors included; at start = resident once the vectors were made (Python and numpy included).",
        "",
        "| step | items | seconds | peak MB | at start MB | result |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        if "error" in row or "skipped" in row:
            lines.append(f"| {row['step']} | {row['items']:,} | | | | {_not_run(row)} |")
        else:
            lines.append(
                f"| {row['step']} | {row['items']:,} | {row['seconds']:.1f} | {row['peak_mb']:,.0f} | "
                f"{row['vectors_mb']:,.0f} | {detail(row)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
