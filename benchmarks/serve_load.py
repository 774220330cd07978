"""What `invedge serve` costs over the offline Embedder: POST /v1/embed at 1, 8 and 32 clients.

    python benchmarks/serve_load.py                                  # runs/demo/export, else a tiny model
    python benchmarks/serve_load.py --model runs/fmnist/export --images 512 --seconds 10 --json serve.json
    python benchmarks/serve_load.py --images 16 --seconds 0.5 --clients 1,4 --json /tmp/s.json   # toy size

The same JPEGs (Fashion-MNIST test images enlarged to `--jpeg-size` pixels), the same backend, one run:
- offline: `Embedder.embed` over all the images in batches of `--batch` (the offline rate, images/s),
  then one image per call (the offline single-image latency);
- served: `invedge serve MODEL --index … --port 0 --max-batch BATCH` in a subprocess; for each client
  count, that many threads each POST one image per request to /v1/embed over a keep-alive connection
  for `--seconds`, after `--warmup` seconds not counted: images/s and p50/p95/p99 request latency.
Ratios (the targets): the rate at the largest client count over the offline rate
(≥ 0.8: dynamic batching hides the HTTP cost), and the p50 at the smallest client count minus the
offline single-image p50 (≤ 3 ms). The clients are threads of this process (http.client, the standard
library only): on a machine with few cores they take CPU from the server, which the figures include.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mimetypes
import os
import re
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

REPO = Path(__file__).resolve().parents[1]
DEMO_EXPORT = REPO / "runs" / "demo" / "export"
FORMAT = "invspread-edge/serve-load/1"
RATE_TARGET = 0.8  # served images/s at the most clients ≥ this × the offline rate
LATENCY_TARGET_MS = 3.0  # p50 at one client ≤ offline single-image p50 + this
SERVING_LINE = re.compile(r"serving (http://\S+)")
START_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", type=Path, default=None, help="an export folder or model file (default: see top)"
    )
    p.add_argument("--images", type=int, default=256, help="distinct JPEGs the clients cycle through")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per client count and offline")
    p.add_argument("--clients", default="1,8,32", help="comma list of concurrent client counts")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of requests not counted, per count")
    p.add_argument("--backend", default="auto", help="for the offline Embedder and the server alike")
    p.add_argument("--precision", default=None, help="model precision (default: the backend's choice)")
    p.add_argument("--batch", type=int, default=32, help="offline batch size and the server's --max-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    p.add_argument("--jpeg-size", type=int, default=128, help="side of the JPEG files")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        args.client_counts = []
    if not args.client_counts or min(args.client_counts) < 1:
        p.error(f"Invalid --clients {args.clients!r}. Give counts of at least 1, e.g. 1,8,32")
    if args.images < 1 or args.seconds <= 0 or args.batch < 1:
        p.error("--images and --batch must be at least 1, --seconds more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        work = Path(tmp)
        model, source = pick_model(args.model, work)
        paths = make_jpegs(work / "jpegs", args.images, args.jpeg_size)
        print(
            f"model: {model} ({source}); {len(paths):,} JPEGs of {args.jpeg_size} px; {os.cpu_count()} CPUs"
        )
        offline, reference = measure_offline(model, paths, args)
        index = build_index(model, paths, work, args)
        with Server(model, index, args) as server:
            served_backend = server.info()["backend"]
            offline["served_max_abs_diff"] = check_embedding(server.url, paths[0], reference)
            rows = [drive(server.url, paths, clients, args) for clients in args.client_counts]
        report = make_report(args, model, source, len(paths), offline, served_backend, rows)
        report["server_exit_code"] = server.exit_code
    print_table(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if server.exit_code == 0 else 1


# --- the model, the images and the gallery ------------------------------------------------------


def pick_model(given: Path | None, work: Path) -> tuple[Path, str]:
    """The model to serve and where it came from: given, the demo's export, or a tiny one made now."""
    if given is not None:
        return given, "given with --model"
    if DEMO_EXPORT.is_dir():
        return DEMO_EXPORT, "runs/demo/export (make demo)"
    return make_tiny_export(work / "tiny_export"), "tiny: a random width-8 encoder exported for this run"


def make_tiny_export(folder: Path) -> Path:
    """As the tests' `tiny_export` fixture, FP32 only: a randomly initialised width-8 ResNet (needs torch)."""
    try:
        import torch
    except ImportError:
        sys.exit("error: no model. Pass --model EXPORT (making a tiny one needs the toolkit: torch)")
    from invspread_edge.model import create_model
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.pipeline import ExportOptions, export_model

    torch.manual_seed(0)
    config = dict(
        arch="cifar_resnet18",
        width=8,
        embedding_dim=32,
        image_size=28,
        mean=[0.2860] * 3,
        std=[0.3530] * 3,
        data="fashion-mnist",
    )
    model = create_model(config["arch"], width=config["width"], embedding_dim=config["embedding_dim"])
    options = ExportOptions(
        out_dir=folder,
        accuracy_queries=100,
        accuracy_memory=200,
        allow_accuracy_drop=100.0,  # an untrained network: accuracy figures are noise
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


# --- served: the server in a subprocess and the clients -----------------------------------------


class Server:
    """`invedge serve` on a free loopback port; the URL from its one "serving" line; SIGTERM at exit."""

    def __init__(self, model: Path, index: Path, args: argparse.Namespace) -> None:
        self.argv = [
            sys.executable, "-c", "import sys; from invspread_edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", str(model), "--index", str(index), "--port", "0", "--backend", args.backend,
            "--max-batch", str(args.batch), "--max-wait-ms", f"{args.max_wait_ms:g}",
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


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """(field, filename, bytes) → a multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, filename, data in files:
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        parts.append(f"{head}Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def check_embedding(url: str, path: Path, reference: Any) -> float:
    """How far the served embedding of one image is from the offline one (and a first request)."""
    import numpy as np

    body, kind = multipart([("image", path.name, path.read_bytes())])
    status, answer = Client(url).request("POST", "/v1/embed", body, kind)
    if status != 200:
        raise RuntimeError(f"POST /v1/embed answered {status}: {answer[:200]!r}")
    served = np.asarray(json.loads(answer)["items"][0]["embedding"], dtype=np.float32)
    return float(np.abs(served - reference).max())


@dataclass
class Tally:
    """What one client thread saw: (completion time, latency) of each 200, and everything else."""

    done: list[tuple[float, float]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def drive(url: str, paths: list[Path], clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """`clients` threads POST one image per request until the deadline; the measured window's figures."""
    bodies = [multipart([("image", p.name, p.read_bytes())]) for p in paths]
    start = time.perf_counter() + 0.2  # every thread connected before the clock starts
    measured_from = start + args.warmup
    deadline = measured_from + args.seconds
    tallies = [Tally() for _ in range(clients)]

    def client(n: int, tally: Tally) -> None:
        conn = Client(url)
        i = n * len(bodies) // clients  # each client starts elsewhere in the images
        while time.perf_counter() < start:
            time.sleep(0.001)
        while time.perf_counter() < deadline:
            body, kind = bodies[i % len(bodies)]
            i += 1
            began = time.perf_counter()
            try:
                status, _ = conn.request("POST", "/v1/embed", body, kind)
            except (OSError, http.client.HTTPException) as exc:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = Client(url)
                continue
            ended = time.perf_counter()
            if status == 200:
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
    return {
        "clients": clients,
        "images_per_s": len(window) / args.seconds,
        "requests": len(window),
        "latency_ms": percentiles(window),
        "other_statuses": statuses,  # e.g. 503 when the queue was full: none expected at these loads
        "connection_errors": sum(len(t.errors) for t in tallies),
    }


# --- the report ---------------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not seconds:
        return {"p50": None, "p95": None, "p99": None}
    ms = np.asarray(seconds) * 1000.0
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def make_report(
    args: argparse.Namespace,
    model: Path,
    source: str,
    images: int,
    offline: dict[str, Any],
    served_backend: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    for row in rows:
        row["vs_offline"] = row["images_per_s"] / offline["images_per_s"]
    most = max(rows, key=lambda r: r["clients"])
    fewest = min(rows, key=lambda r: r["clients"])
    offline_p50 = offline["single_latency_ms"]["p50"]
    p50 = fewest["latency_ms"]["p50"]
    overhead = None if p50 is None else p50 - offline_p50
    same = all(served_backend.get(key) == offline["backend"][key] for key in ("name", "precision"))
    return {
        "format": FORMAT,
        "model": {"path": str(model), "source": source},
        "backend": {"offline": offline["backend"], "served": served_backend, "same": same},
        "setup": {
            "images": images,
            "jpeg_size": args.jpeg_size,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "batch": args.batch,
            "max_wait_ms": args.max_wait_ms,
            "cpus": os.cpu_count(),
        },
        "offline": offline,
        "rows": rows,
        "ratios": {
            "rate": {
                "clients": most["clients"],
                "served_vs_offline": most["vs_offline"],
                "target": RATE_TARGET,
                "met": most["vs_offline"] >= RATE_TARGET,
            },
            "latency": {
                "clients": fewest["clients"],
                "served_p50_ms": p50,
                "offline_single_p50_ms": offline_p50,
                "overhead_ms": overhead,
                "target_ms": LATENCY_TARGET_MS,
                "met": overhead is not None and overhead <= LATENCY_TARGET_MS,
            },
        },
    }


def print_table(report: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    offline, backend = report["offline"], report["backend"]
    print(
        f"backend: offline {backend['offline']['name']} ({backend['offline']['precision']}), "
        f"served {backend['served'].get('name')} on {backend['served'].get('device')} "
        f"({backend['served'].get('precision')}){'' if backend['same'] else '  ← NOT THE SAME'}; "
        f"served embeddings within {offline['served_max_abs_diff']:.1e} of offline"
    )
    print(f"{'':<22}{'images/s':>10}{'× offline':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  other")
    single = offline["single_latency_ms"]
    print(f"{'offline (batches)':<22}{offline['images_per_s']:>10,.0f}{1:>11.2f}")
    print(
        f"{'offline (1 image)':<22}{'':>10}{'':>11}{ms(single['p50']):>9}{ms(single['p95']):>9}{ms(single['p99']):>9}"
    )
    for row in report["rows"]:
        lat = row["latency_ms"]
        other = ", ".join(f"{n}× {s}" for s, n in row["other_statuses"].items())
        if row["connection_errors"]:
            other = ", ".join(filter(None, [other, f"{row['connection_errors']} connection errors"]))
        print(
            f"{'served, ' + str(row['clients']) + ' clients':<22}{row['images_per_s']:>10,.0f}"
            f"{row['vs_offline']:>11.2f}{ms(lat['p50']):>9}{ms(lat['p95']):>9}{ms(lat['p99']):>9}  {other}"
        )
    rate, latency = report["ratios"]["rate"], report["ratios"]["latency"]
    print(
        f"at {rate['clients']} clients: {rate['served_vs_offline']:.2f}× the offline rate "
        f"(target ≥ {rate['target']}: {'met' if rate['met'] else 'NOT met'}); "
        f"at {latency['clients']} client(s): p50 {ms(latency['served_p50_ms'])} ms = offline single-image "
        f"{ms(latency['offline_single_p50_ms'])} ms + {ms(latency['overhead_ms'])} ms "
        f"(target ≤ +{latency['target_ms']:g} ms: {'met' if latency['met'] else 'NOT met'})"
    )


if __name__ == "__main__":
    sys.exit(main())
