"""What `invedge serve` costs over the offline Embedder: POST /v1/embed at 1, 8 and 32 connections,
two model sizes, two load generators.

    python benchmarks/serve_load.py                          # tiny and width64, wrk and Python clients
    python benchmarks/serve_load.py --models tiny=runs/demo/export --json s.json --md s.md
    python benchmarks/serve_load.py --models tiny --images 16 --seconds 1 --connections 1,4   # toy size
    make bench-serve ARGS="--json serve.json"                 # installs wrk (apt) first

The models (`--models`, a comma list of NAME or NAME=EXPORT): `tiny` is the demo's export
(runs/demo/export) when there is one, else a random width-8 encoder exported now; `width64` is the
paper's CIFAR ResNet-18 (width 64, 128-d, 32 px input) with UNTRAINED weights, built and exported with
the toolkit's own code (invspread_edge.model + invspread_edge_export) once into `--cache`: its speed is
a trained model's, its embeddings are not. The name sets the target.

For each model, in one run, on the same backend and the same JPEGs (Fashion-MNIST test images
enlarged to `--jpeg-size` px):
- offline, before and after the served rows (their mean is the baseline; the drift between the two is
  reported): `Embedder.embed` over all the images in batches of `--batch` (images/s), then one image
  per call (the single-image latency);
- served: `invedge serve MODEL --index … --port 0 --max-batch BATCH` in a subprocess, driven by
  - wrk (a C load generator in another process: little of the server's CPU; benchmarks/serve_load.lua)
    with `-c N` connections on min(N, 2) threads (wrk's own threads take CPU from the server too: two
    keep 32 connections busy), after a warm-up run; wrk counts whole seconds (`--seconds` rounded,
    at least 1; `--warmup` rounded up). Without wrk its rows say how to install it;
  - Python clients: N threads of this process, one keep-alive connection each (they share the CPUs
    with the server, which their figures include).
  Each request posts one image: the raw JPEG (`Content-Type: image/jpeg`) when the server accepts it,
  else multipart (`--body`). A row with any non-2xx answer or socket error is marked.
Targets, as ratios: at the most connections (32) the served images/s over the offline baseline
≥ 0.8 (width64) or ≥ 0.7 (tiny); at one connection the served p50 ≤ the offline single-image p50
+ 1 ms. Each is judged on the wrk rows (the Python rows when wrk is not installed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import mimetypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from invspread_edge_runtime.bounds import BATCH, THREADS, Bound, check_bounds, helped
from invspread_edge_runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO_EXPORT = REPO / "runs" / "demo" / "export"
LUA_SCRIPT = Path(__file__).resolve().with_suffix(".lua")
FORMAT = "invspread-edge/serve-load/2"
RATE_TARGETS = {"tiny": 0.7, "width64": 0.8}  # served images/s at the most connections ≥ this × offline
LATENCY_TARGET_MS = 1.0  # p50 at one connection ≤ offline single-image p50 + this
DRIVERS = ("wrk", "python")
BODIES = ("auto", "raw", "multipart")
NO_WRK = "wrk not installed (apt-get install wrk)"
WRK_THREADS = 2  # at most: enough for 32 connections, and each thread is CPU the server does not get
SERVING_LINE = re.compile(r"serving (http://\S+)")
WRK_LINE = re.compile(r"^serve_load\.lua (\{.*\})$", re.MULTILINE)
START_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 60.0
FMNIST_NORM = {"mean": [0.2860] * 3, "std": [0.3530] * 3}
# ceilings of what is typed: a slip (an extra 0) must not fill the disk or run for days before it shows
LIMITS = {
    "connection_counts": Bound("--connections", 1, 1024),  # each an open socket of wrk's and the server's
    "images": Bound("--images", 1, 100_000),  # JPEGs written to a temporary folder, held as bytes
    "jpeg_size": Bound("--jpeg-size", 1, 4096),  # pixels per side
    "seconds": Bound("--seconds", 0, 3600, above=True),  # per row: a table has dozens
    "warmup": Bound("--warmup", 0, 3600),
    "batch": BATCH,
    "serve_threads": Bound("--serve-threads", 0, THREADS.high, zero=THREADS.zero),
}
WIDTH64 = dict(arch="cifar_resnet18", width=64, embedding_dim=128, image_size=32, data="fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", default="tiny,width64", help="comma list of tiny|width64, each NAME or NAME=EXPORT"
    )
    p.add_argument(
        "--connections",
        default="1,8,32",
        help=helped("comma list of concurrent connection counts; each", LIMITS["connection_counts"]),
    )
    p.add_argument("--drivers", default="wrk,python", help="load generators: wrk, python or both")
    p.add_argument("--body", default="auto", choices=BODIES, help="auto: raw when the server accepts it")
    p.add_argument(
        "--images",
        type=int,
        default=256,
        help=helped("distinct JPEGs the requests cycle through", LIMITS["images"]),
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help=helped("measured seconds per row (wrk: whole seconds)", LIMITS["seconds"]),
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help=helped("seconds of requests not counted, per row", LIMITS["warmup"]),
    )
    p.add_argument("--backend", default="auto", help="for the offline Embedder and the server alike")
    p.add_argument("--precision", default=None, help="model precision (default: the backend's choice)")
    p.add_argument(
        "--batch", type=int, default=32, help=helped("offline batch size and the server's --max-batch", BATCH)
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    p.add_argument(
        "--serve-threads",
        type=int,
        default=0,
        help=helped(
            "the server's --threads: its inference threads (0: all cores, the default; the offline rows keep all)",
            LIMITS["serve_threads"],
        ),
    )
    p.add_argument(
        "--jpeg-size", type=int, default=128, help=helped("side of the JPEG files", LIMITS["jpeg_size"])
    )
    p.add_argument("--wrk", default="wrk", help="the wrk program")
    p.add_argument(
        "--cache", type=Path, default=REPO / ".cache" / "serve_load", help="where width64 is exported"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--md", type=Path, default=None, help="also write the tables to this Markdown file")
    args = p.parse_args(argv)
    args.model_specs = parse_models(p, args.models)
    args.connection_counts = parse_counts(p, args.connections)
    args.driver_list = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if not args.driver_list or not set(args.driver_list) <= set(DRIVERS):
        p.error(f"Invalid --drivers {args.drivers!r}. Use wrk, python or wrk,python")
    try:
        check_bounds(LIMITS, vars(args))
    except ConfigError as exc:
        p.error(str(exc))
    return args


def parse_models(p: argparse.ArgumentParser, text: str) -> list[tuple[str, Path | None]]:
    """`tiny,width64=runs/x/export` → [("tiny", None), ("width64", Path(...))]."""
    specs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, path = item.partition("=")
        if name not in RATE_TARGETS:
            p.error(f"Invalid model {name!r} in --models. Use tiny or width64, each optionally =EXPORT")
        specs.append((name, Path(path) if path else None))
    if not specs:
        p.error("--models is empty. Use tiny, width64 or tiny,width64")
    return specs


def parse_counts(p: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        p.error(f"Invalid --connections {text!r}. Give counts of at least 1, e.g. 1,8,32")
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which(args.wrk) if "wrk" in args.driver_list else None
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        work = Path(tmp)
        paths = make_jpegs(work / "jpegs", args.images, args.jpeg_size)
        print(
            f"{len(paths):,} JPEGs of {args.jpeg_size} px; {os.cpu_count()} CPUs; wrk: {wrk_status(args, wrk)}"
        )
        reports = [run_model(name, given, paths, work / name, args, wrk) for name, given in args.model_specs]
    report = {"format": FORMAT, "setup": setup(args, len(paths), wrk), "models": reports}
    markdown = to_markdown(report)
    print(markdown)
    for path, text in ((args.json, json.dumps(report, indent=2) + "\n"), (args.md, markdown + "\n")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 0 if all(m["server_exit_code"] == 0 for m in reports) else 1


def setup(args: argparse.Namespace, images: int, wrk: str | None) -> dict[str, Any]:
    return {
        "images": images,
        "jpeg_size": args.jpeg_size,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "batch": args.batch,
        "max_wait_ms": args.max_wait_ms,
        "serve_threads": args.serve_threads,
        "connections": args.connection_counts,
        "drivers": args.driver_list,
        "wrk": wrk_status(args, wrk),
        "cpus": os.cpu_count(),
    }


def run_model(
    name: str, given: Path | None, paths: list[Path], work: Path, args: argparse.Namespace, wrk: str | None
) -> dict[str, Any]:
    """One model: offline, the served rows of every driver and connection count, offline again."""
    work.mkdir(parents=True)
    model, source = make_model(name, given, work, args.cache)
    print(f"\n== {name}: {model} ({source})")
    before, reference = measure_offline(model, paths, args)
    index = build_index(model, paths, work, args)
    with Server(model, index, args) as server:
        served_backend = server.info()["backend"]
        body = pick_body(server.url, paths[0], args.body)
        diff = check_embedding(server.url, paths[0], reference, body)
        rows = []
        for driver in args.driver_list:
            for connections in args.connection_counts:
                row = drive_wrk(wrk, server.url, paths, connections, body, work, args) if driver == "wrk" else (
                    drive_python(server.url, paths, connections, body, args)
                )  # fmt: skip
                print(row_line(row))
                rows.append(row)
    after, _ = measure_offline(model, paths, args)
    offline = combine_offline(before, after)
    offline["served_max_abs_diff"] = diff
    same = all(served_backend.get(key) == offline["backend"][key] for key in ("name", "precision"))
    for row in rows:
        if "skipped" not in row:
            row["vs_offline"] = row["images_per_s"] / offline["images_per_s"]
    return {
        "name": name,
        "model": {"path": str(model), "source": source},
        "backend": {"offline": offline["backend"], "served": served_backend, "same": same},
        "body": body,
        "offline": offline,
        "rows": rows,
        "targets": targets(name, offline, rows),
        "server_exit_code": server.exit_code,
    }


# --- the models, the images and the gallery ------------------------------------------------------


def make_model(name: str, given: Path | None, work: Path, cache: Path) -> tuple[Path, str]:
    if given is not None:
        return given, "given with --models"
    if name == "width64":
        return make_width64_export(cache), "width64: an UNTRAINED width-64 ResNet-18 (128-d, 32 px), exported"
    return pick_model(None, work)


def pick_model(given: Path | None, work: Path) -> tuple[Path, str]:
    """The model to serve and where it came from: given, the demo's export, or a tiny one made now."""
    if given is not None:
        return given, "given with --model"
    if DEMO_EXPORT.is_dir():
        return DEMO_EXPORT, "runs/demo/export (make demo)"
    return make_tiny_export(work / "tiny_export"), "tiny: a random width-8 encoder exported for this run"


def make_tiny_export(folder: Path) -> Path:
    """As the tests' `tiny_export` fixture, FP32 only: a randomly initialised width-8 ResNet (needs torch)."""
    config = dict(arch="cifar_resnet18", width=8, embedding_dim=32, image_size=28, data="fashion-mnist")
    return export_untrained(config, folder)


def make_width64_export(cache: Path) -> Path:
    """The paper's network, untrained, exported once into `cache` (reused while its report is there)."""
    folder = cache / "width64_export"
    if not (folder / "report.json").is_file():
        print(f"exporting an untrained width-64 ResNet-18 to {folder} (once; about a minute)")
        export_untrained(WIDTH64, folder)
    return folder


def export_untrained(config: dict[str, Any], folder: Path) -> Path:
    """A randomly initialised encoder (seed 0) through the toolkit's export pipeline, FP32 only."""
    try:
        import torch
    except ImportError:
        sys.exit("error: no model. Pass --models NAME=EXPORT (making one needs the toolkit: torch)")
    from invspread_edge.model import create_model
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.pipeline import ExportOptions, export_model

    torch.manual_seed(0)
    config = {**config, **FMNIST_NORM}
    model = create_model(config["arch"], width=config["width"], embedding_dim=config["embedding_dim"])
    options = ExportOptions(
        out_dir=folder,
        accuracy_queries=100,
        accuracy_memory=200,
        allow_accuracy_drop=100.0,  # an untrained network: accuracy figures are noise
        overwrite=True,
    )
    export_model(model.eval(), meta_from_config(config, "0" * 64), options, data="fashion-mnist")
    return folder


def make_jpegs(folder: Path, count: int, side: int) -> list[Path]:
    """Fashion-MNIST test images enlarged to `side` px: real JPEGs to decode, on both paths alike."""
    from PIL import Image

    from invspread_edge_runtime.evaluation.datasets import open_dataset

    images = open_dataset("fashion-mnist", "test").images
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        pixels = images[i % len(images)].transpose(1, 2, 0)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).resize((side, side), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def build_index(model: Path, paths: list[Path], work: Path, args: argparse.Namespace) -> Path:
    """The gallery the server loads (`invedge embed` + `invedge index build` in Python): the images."""
    from invspread_edge_runtime import Embedder, Index
    from invspread_edge_runtime.embeddings.corpus import embed_to_folder
    from invspread_edge_runtime.embeddings.reader import load_embeddings

    with Embedder(model, backend=args.backend, precision=args.precision) as emb:
        embed_to_folder(emb, paths, paths[0].parent, work / "gallery.emb")
    out = work / "gallery.index"
    Index.from_embeddings(load_embeddings(work / "gallery.emb")).save(out)
    return out


# --- offline: the Embedder alone ----------------------------------------------------------------


def measure_offline(model: Path, paths: list[Path], args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The offline rate (whole batches) and single-image latency; the first image's embedding."""
    from invspread_edge_runtime import Embedder

    with Embedder(model, backend=args.backend, batch_size=args.batch, precision=args.precision) as emb:
        emb.embed(paths[: args.batch])  # warm-up: sessions, engines, caches
        done, start = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - start < args.seconds:
            done += len(emb.embed(paths))
        rate = done / (time.perf_counter() - start)

        latencies, start = [], time.perf_counter()
        while len(latencies) < 5 or time.perf_counter() - start < args.seconds:
            path = paths[len(latencies) % len(paths)]
            began = time.perf_counter()
            emb.embed([path])
            latencies.append(time.perf_counter() - began)
        reference = emb.embed(paths[:1])[0]
        backend = {
            "name": emb.info.name,
            "precision": emb.info.precision,
            "model_path": str(emb.info.model_path),
        }
    return {
        "backend": backend,
        "images_per_s": rate,
        "images": done,
        "single_latency_ms": percentiles(latencies),
        "single_calls": len(latencies),
    }, reference


def combine_offline(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The baseline is the mean of the runs before and after the served rows; drift is after/before − 1."""
    rate = (before["images_per_s"] + after["images_per_s"]) / 2
    p50 = (before["single_latency_ms"]["p50"] + after["single_latency_ms"]["p50"]) / 2
    return {
        "backend": before["backend"],
        "images_per_s": rate,
        "single_p50_ms": p50,
        "drift": {
            "images_per_s": after["images_per_s"] / before["images_per_s"] - 1,
            "single_p50_ms": after["single_latency_ms"]["p50"] / before["single_latency_ms"]["p50"] - 1,
        },
        "before": before,
        "after": after,
    }


# --- served: the server in a subprocess ---------------------------------------------------------


class Server:
    """`invedge serve` on a free loopback port; the URL from its one "serving" line; SIGTERM at exit."""

    def __init__(self, model: Path, index: Path, args: argparse.Namespace) -> None:
        self.argv = [
            sys.executable, "-c", "import sys; from invspread_edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", str(model), "--index", str(index), "--port", "0", "--backend", args.backend,
            "--max-batch", str(args.batch), "--max-wait-ms", f"{args.max_wait_ms:g}",
            "--threads", str(args.serve_threads),
        ]  # fmt: skip
        if args.precision:
            self.argv += ["--precision", args.precision]
        self.url = self.line = ""
        self.exit_code: int | None = None
        self.log: list[str] = []

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        found = threading.Event()

        def read_stderr() -> None:  # keeps draining, so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                match = SERVING_LINE.search(line)
                if match and not found.is_set():
                    self.url, self.line = match.group(1), line.strip()
                    found.set()
            found.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        if not found.wait(START_TIMEOUT_S) or not self.url:
            self.proc.kill()
            tail = " | ".join(self.log[-5:])
            sys.exit(f"error: invedge serve did not start within {START_TIMEOUT_S:.0f} s: {tail}")
        print(self.line)
        return self

    def info(self) -> dict[str, Any]:
        status, body = Client(self.url).request("GET", "/v1/info")
        if status != 200:
            raise RuntimeError(f"GET /v1/info answered {status}: {body[:200]!r}")
        return json.loads(body)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()


class Client:
    """One keep-alive HTTP connection (http.client: nothing to install beside the runtime)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=CLIENT_TIMEOUT_S)

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def request_body(path: Path, kind: str) -> tuple[bytes, str]:
    """One image as a request body: the raw JPEG, or a multipart form with one `image` field."""
    data = path.read_bytes()
    if kind == "raw":
        return data, "image/jpeg"
    boundary = uuid.uuid4().hex
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
    body = f"{head}Content-Type: {mime}\r\n\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def pick_body(url: str, path: Path, wanted: str) -> str:
    """raw when the server accepts a raw image body (--body auto or raw), else multipart."""
    if wanted == "multipart":
        return "multipart"
    status, answer = Client(url).request("POST", "/v1/embed", *request_body(path, "raw"))
    if status == 200:
        return "raw"
    if status == 415 and wanted == "auto":
        print("the server refused a raw image body (415): the requests are multipart")
        return "multipart"
    sys.exit(
        f"error: a raw image body to /v1/embed answered {status}: {answer[:200]!r}. Use --body multipart"
    )


def check_embedding(url: str, path: Path, reference: Any, body: str) -> float:
    """How far the served embedding of one image is from the offline one."""
    import numpy as np

    status, answer = Client(url).request("POST", "/v1/embed", *request_body(path, body))
    if status != 200:
        raise RuntimeError(f"POST /v1/embed answered {status}: {answer[:200]!r}")
    served = np.asarray(json.loads(answer)["items"][0]["embedding"], dtype=np.float32)
    return float(np.abs(served - reference).max())


# --- the load generators ------------------------------------------------------------------------


def drive_wrk(
    wrk: str | None,
    url: str,
    paths: list[Path],
    connections: int,
    body: str,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """wrk with `connections` connections on min(connections, 2) threads: a warm-up run, then the row."""
    row: dict[str, Any] = {"driver": "wrk", "connections": connections}
    if wrk is None:
        return {**row, "skipped": NO_WRK}
    listing = work / "wrk_images.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    threads = min(connections, WRK_THREADS)

    def run(seconds: int) -> dict[str, Any]:
        argv = [
            wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{CLIENT_TIMEOUT_S:g}s",
            "-s", str(LUA_SCRIPT), url, "--", body, str(listing), str(threads),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + CLIENT_TIMEOUT_S + 30)
        found = WRK_LINE.search(proc.stdout)
        if proc.returncode != 0 or found is None:
            tail = (proc.stderr or proc.stdout).strip()[-300:]
            raise RuntimeError(f"wrk exited {proc.returncode} without its result line: {tail}")
        return json.loads(found.group(1))

    if args.warmup > 0:
        run(math.ceil(args.warmup))
    return {**row, "threads": threads, **wrk_row(run(max(1, round(args.seconds))))}


def wrk_row(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one wrk run (its JSON line) in the Python rows' terms."""
    statuses: dict[str, int] = {}
    for thread in result["threads"]:
        for status, count in thread["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    seconds = result["duration_us"] / 1e6
    errors = {k: v for k, v in result["errors"].items() if k != "status"}
    latency = result["latency_us"]
    return mark({
        "seconds": seconds,
        "images_per_s": ok / seconds,
        "requests": ok,
        "latency_ms": {f"p{q}": latency[f"p{q}"] / 1000 for q in (50, 95, 99)},
        "non_2xx": {s: n for s, n in sorted(statuses.items()) if not s.startswith("2")},
        "socket_errors": sum(errors.values()),
        "socket_error_kinds": errors,
    })  # fmt: skip


@dataclass
class Tally:
    """What one client thread saw: (completion time, latency) of each 2xx, and everything else."""

    done: list[tuple[float, float]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def drive_python(
    url: str, paths: list[Path], connections: int, body: str, args: argparse.Namespace
) -> dict[str, Any]:
    """`connections` threads POST one image per request until the deadline; the measured window's figures."""
    bodies = [request_body(p, body) for p in paths]
    start = time.perf_counter() + 0.2  # every thread connected before the clock starts
    measured_from = start + args.warmup
    deadline = measured_from + args.seconds
    tallies = [Tally() for _ in range(connections)]

    def client(n: int, tally: Tally) -> None:
        conn = Client(url)
        i = n * len(bodies) // connections  # each client starts elsewhere in the images
        while time.perf_counter() < start:
            time.sleep(0.001)
        while time.perf_counter() < deadline:
            data, kind = bodies[i % len(bodies)]
            i += 1
            began = time.perf_counter()
            try:
                status, _ = conn.request("POST", "/v1/embed", data, kind)
            except (OSError, http.client.HTTPException) as exc:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = Client(url)
                continue
            ended = time.perf_counter()
            if 200 <= status < 300:
                tally.done.append((ended, ended - began))
            else:
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n, t)) for n, t in enumerate(tallies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    window = [lat for t in tallies for ended, lat in t.done if measured_from <= ended <= deadline]
    statuses: dict[str, int] = {}
    for t in tallies:
        for status, count in t.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    return mark({
        "driver": "python",
        "connections": connections,
        "threads": connections,
        "seconds": args.seconds,
        "images_per_s": len(window) / args.seconds,
        "requests": len(window),
        "latency_ms": percentiles(window),
        "non_2xx": dict(sorted(statuses.items())),  # e.g. 503 when the queue was full
        "socket_errors": sum(len(t.errors) for t in tallies),
    })  # fmt: skip


def mark(row: dict[str, Any]) -> dict[str, Any]:
    """A row with any non-2xx answer or socket error is marked: its figures are not the server's best."""
    row["marked"] = bool(row["non_2xx"]) or row["socket_errors"] > 0
    return row


def wrk_status(args: argparse.Namespace, wrk: str | None) -> str:
    if "wrk" not in args.driver_list:
        return "not used (--drivers)"
    return wrk_version(wrk) if wrk else NO_WRK


def wrk_version(wrk: str) -> str:
    """`wrk debian/4.1.0-3+b2 [epoll]`: the first line of `wrk --version`, without its copyright."""
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0] if lines else wrk


# --- the report ---------------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not seconds:
        return {"p50": None, "p95": None, "p99": None}
    ms = np.asarray(seconds) * 1000.0
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def targets(name: str, offline: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Both targets for every driver that ran, and which driver judges them (wrk when it ran)."""
    ran = [r for r in rows if "skipped" not in r]
    drivers = [d for d in DRIVERS if any(r["driver"] == d for r in ran)]
    out: dict[str, Any] = {"judged_by": drivers[0] if drivers else None, "rate": {}, "latency": {}}
    for driver in drivers:
        mine = [r for r in ran if r["driver"] == driver]
        most, fewest = max(mine, key=lambda r: r["connections"]), min(mine, key=lambda r: r["connections"])
        out["rate"][driver] = {
            "connections": most["connections"],
            "served_vs_offline": most["vs_offline"],
            "target": RATE_TARGETS[name],
            "marked": most["marked"],
            "met": most["vs_offline"] >= RATE_TARGETS[name] and not most["marked"],
        }
        p50, bound = fewest["latency_ms"]["p50"], offline["single_p50_ms"] + LATENCY_TARGET_MS
        out["latency"][driver] = {
            "connections": fewest["connections"],
            "served_p50_ms": p50,
            "offline_single_p50_ms": offline["single_p50_ms"],
            "overhead_ms": None if p50 is None else p50 - offline["single_p50_ms"],
            "target_ms": LATENCY_TARGET_MS,
            "p50_vs_bound": None if p50 is None else p50 / bound,  # ≤ 1: met
            "marked": fewest["marked"],
            "met": p50 is not None and p50 <= bound and not fewest["marked"],
        }
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def row_line(row: dict[str, Any]) -> str:
    """One row as the progress line printed while the run goes."""
    head = f"{row['driver']:>6}, {row['connections']:>3} connections: "
    if "skipped" in row:
        return head + row["skipped"]
    lat = row["latency_ms"]
    return (
        head
        + f"{row['images_per_s']:,.0f} images/s, p50 {ms(lat['p50'])} ms, p99 {ms(lat['p99'])} ms"
        + (f"  MARKED: {problems(row)}" if row["marked"] else "")
    )


def problems(row: dict[str, Any]) -> str:
    words = [f"{n}× {s}" for s, n in row["non_2xx"].items()]
    if row["socket_errors"]:
        words.append(f"{row['socket_errors']} socket errors")
    return ", ".join(words)


def to_markdown(report: dict[str, Any]) -> str:
    """Every model's table and its targets (printed, and written with --md)."""
    setup = report["setup"]
    lines = [
        f"serve_load: {setup['images']} JPEGs of {setup['jpeg_size']} px, {setup['seconds']:g} s per row after "
        f"{setup['warmup']:g} s of warm-up, --max-batch {setup['batch']}, --max-wait-ms {setup['max_wait_ms']:g}, "
        f"--threads {setup.get('serve_threads', 0)} (0: all cores), {setup['cpus']} CPUs; wrk: {setup['wrk']}",
    ]
    for model in report["models"]:
        lines += ["", *model_markdown(model)]
    return "\n".join(lines)


def model_markdown(model: dict[str, Any]) -> list[str]:
    offline, backend = model["offline"], model["backend"]
    served = backend["served"]
    lines = [
        f"### {model['name']}",
        "",
        f"{model['model']['source']}: {model['model']['path']}; offline {backend['offline']['name']} ({backend['offline']['precision']}), served "
        f"{served.get('name')} on {served.get('device')} ({served.get('precision')})"
        f"{'' if backend['same'] else ' ← NOT THE SAME'}; {model['body']} request bodies; served embeddings within "
        f"{offline['served_max_abs_diff']:.1e} of offline",
        "",
        "| rows | connections | images/s | × offline | p50 ms | p95 ms | p99 ms | non-2xx, socket errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for when in ("before", "after"):
        part = offline[when]
        single = part["single_latency_ms"]
        lines.append(
            f"| offline {when} | | {part['images_per_s']:,.0f} | | {ms(single['p50'])} (1 image) "
            f"| {ms(single['p95'])} | {ms(single['p99'])} | |"
        )
    drift = offline["drift"]
    lines.append(
        f"| offline mean (drift {drift['images_per_s']:+.0%} images/s, {drift['single_p50_ms']:+.0%} p50) | "
        f"| {offline['images_per_s']:,.0f} | 1.00 | {ms(offline['single_p50_ms'])} (1 image) | | | |"
    )
    for row in model["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['driver']} | {row['connections']} | {row['skipped']} | | | | | |")
            continue
        lat = row["latency_ms"]
        lines.append(
            f"| {row['driver']}{' **MARKED**' if row['marked'] else ''} | {row['connections']} "
            f"| {row['images_per_s']:,.0f} | {row['vs_offline']:.2f} | {ms(lat['p50'])} | {ms(lat['p95'])} "
            f"| {ms(lat['p99'])} | {problems(row)} |"
        )
    lines.append("")
    lines += target_lines(model["targets"])
    return lines


def target_lines(found: dict[str, Any]) -> list[str]:
    def verdict(entry: dict[str, Any]) -> str:
        return ("PASS" if entry["met"] else "FAIL") + (" (marked row)" if entry["marked"] else "")

    lines = []
    for driver, rate in found["rate"].items():
        judge = " (judged)" if driver == found["judged_by"] else ""
        latency = found["latency"][driver]
        lines.append(
            f"- {driver}{judge}: at {rate['connections']} connections {rate['served_vs_offline']:.2f}× offline "
            f"(target ≥ {rate['target']}): {verdict(rate)}; at {latency['connections']} connection(s) p50 "
            f"{ms(latency['served_p50_ms'])} ms = offline single-image {ms(latency['offline_single_p50_ms'])} ms "
            f"+ {ms(latency['overhead_ms'])} ms, {latency['p50_vs_bound'] or 0:.2f}× the bound "
            f"(target ≤ +{latency['target_ms']:g} ms): {verdict(latency)}"
        )
    return lines or ["- no served rows ran: no targets judged"]


if __name__ == "__main__":
    sys.exit(main())
