"""One prepared check of the CUDA training and inference paths, for when a GPU machine is at hand.

    benchmarks/gpu_check.sh                     # on the GPU machine: under 8 minutes, writes gpu_check.json
    benchmarks/gpu_check.sh --dry-run           # every step at toy size on the CPU (tests run this)

Made for an H200 with torch and CUDA, no TensorRT, a CPU-only onnxruntime and no network:
Fashion-MNIST's four files travel with the working tree (INVEDGE_FASHION_MNIST points at them)
and the project is installed with `pip install --no-deps -e .`. Steps, each timed and recorded
(one failing step is recorded and the others still run):

1. throughput: `invedge train`'s own loop (`train_one_epoch`: batch selection, the two-view
   augmentation on the GPU, forward, loss, backward, step) against the bare step on pre-made GPU
   tensors (benchmarks/train_throughput.py), at the paper's width 64, bf16 autocast and fp16 with
   the grad scaler, channels_last, eager and `torch.compile`d; loop / bare (target >= 0.9: the loop
   keeps the GPU fed) and GPU memory at peak (torch.cuda.max_memory_allocated).
2. train_fp16: `invedge train --precision fp16` for one epoch of the 60k: the CLI path with the scaler.
3. long_run: `invedge train` (bf16, width 64, cosine) for as many epochs of the full 60k as fit in
   the time left, kNN every few epochs on the full split (60k memory, 10k queries, k = 200), against
   the 85.13 % of the 30-minute CPU recipe (benchmarks/fmnist_recipe.sh: width 16, 20 epochs).
   A timer stops it at the budget (SIGINT: the run saves and stops at a step boundary).
4. cifar10_estimate: the paper's 200-epoch CIFAR-10 schedule's wall time from the measured
   images/s: arithmetic, not a measurement (50k images x 200 epochs, 32x32 against 28x28 pixels).
5. export + verify: `invedge export` of the long run (fp32, parity on the CPU) and its probe set
   checked on ort-cpu (`invedge verify`'s library call).
6. bench: the torch CUDA rows of `invedge bench` (fp32, bf16, fp16) at batch 1, 64 and 256.

The JSON report (--out) holds every figure; a table is printed at the end. Exit status 1 when a
step failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_throughput, beside this file

FORMAT = "invspread-edge/gpu-check/1"
# The 30-minute CPU recipe (benchmarks/fmnist_recipe.sh, README): width 16, 20 epochs, cosine.
CPU_RECIPE = {
    "knn_accuracy": 0.8513,
    "epochs": 20,
    "width": 16,
    "minutes": 26.8,
    "source": "fmnist_recipe.sh",
}
FMNIST_TRAIN, FMNIST_SIDE = 60000, 28
COMPILE_ROOM_S = 150  # a compiled throughput row starts only with this much left beyond the reserve
CIFAR10 = {"images": 50000, "epochs": 200, "side": 32}

# Sizes: the real check, and the toy one the tests run on a CPU.
REAL = {
    "device": "cuda",
    "width": 64,
    "batch_size": 128,
    "throughput_steps": 60,
    "throughput_warmup": 10,
    "compile_backend": "inductor",
    "limit": None,
    "eval_memory": 0,
    "eval_queries": 0,
    "bench_batches": "1,64,256",
    "bench_images": 512,
    "bench_timing": ["--warmup", "5", "--seconds", "1"],
    "budget_s": 440,
    "reserve_s": 90,  # export + verify + bench + the table, after the long run
}
DRY = {
    "device": "cpu",
    "width": 4,
    "batch_size": 8,
    "throughput_steps": 2,
    "throughput_warmup": 1,
    "compile_backend": "eager",  # dynamo's tracing only: inductor's C++ build takes minutes on a CPU
    "limit": 128,
    "eval_memory": 128,
    "eval_queries": 64,
    "bench_batches": "1,4",
    "bench_images": 8,
    "bench_timing": ["--warmup", "1", "--iters", "2", "--threads", "1"],
    "budget_s": 300,
    "reserve_s": 30,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU (seconds each)")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    p.add_argument("--work", type=Path, default=None, help="run folders (default: beside --out)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-time budget of the whole check")
    p.add_argument(
        "--long-epochs", type=int, default=None, help="epochs of the long run (default: fit the budget)"
    )
    return p.parse_args(argv)


class Check:
    """The report being built: one record per step, written after every step."""

    def __init__(self, args: argparse.Namespace, size: dict[str, Any]) -> None:
        self.args, self.size = args, size
        self.started = time.perf_counter()
        self.budget = float(args.budget_s or size["budget_s"])
        self.work = args.work or args.out.parent / (args.out.stem + "-runs")
        self.report: dict[str, Any] = {
            "format": FORMAT,
            "dry_run": bool(args.dry_run),
            "what": "DRY RUN: toy sizes on the CPU; no figure here is a GPU measurement"
            if args.dry_run
            else "measured on this machine",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "budget_s": self.budget,
            "sizes": {k: v for k, v in size.items() if k != "bench_timing"},
            "environment": {},
            "steps": {},
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def step(
        self, name: str, fn: Callable[[], dict[str, Any]], needs: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        missing = [n for n in needs if self.report["steps"].get(n, {}).get("status") != "ok"]
        t0 = time.perf_counter()
        if missing:
            record: dict[str, Any] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
        else:
            print(f"--- {name} ({self.elapsed():.0f} s in, {self.left():.0f} s left)", flush=True)
            try:
                record = {"status": "ok", **fn()}
            except Exception as exc:  # one failed step is recorded; the others still run
                record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}
                traceback.print_exc()
        record["seconds"] = round(time.perf_counter() - t0, 2)
        self.report["steps"][name] = record
        self.write()
        return record

    def write(self) -> None:
        from invspread_edge_runtime.files import atomic_write_json

        self.report["seconds"] = round(self.elapsed(), 2)
        atomic_write_json(self.args.out, self.report)


# --- the steps ------------------------------------------------------------------------------------


def environment(check: Check) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "fashion_mnist": os.environ.get("INVEDGE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    elif check.size["device"] == "cuda":
        raise RuntimeError("no CUDA GPU visible to torch; run with --dry-run on a CPU")
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


def throughput(check: Check) -> dict[str, Any]:
    import train_throughput

    size = check.size
    rows = []
    for precision in ("bf16", "fp16"):
        for compiled in (False, True):
            # a compile takes a minute or two: leave the long run and the last steps their share
            if compiled and check.left() < size["reserve_s"] + COMPILE_ROOM_S:
                rows.append({"precision": precision, "compiled": True, "skipped": "time budget"})
                print(f"  {precision} compiled: skipped ({check.left():.0f} s left)", flush=True)
                continue
            argv = [
                "--device",
                size["device"],
                "--width",
                str(size["width"]),
                "--batch-size",
                str(size["batch_size"]),
                "--steps",
                str(size["throughput_steps"]),
                "--warmup",
                str(size["throughput_warmup"]),
                "--precision",
                precision,
                "--compile-backend",
                size["compile_backend"],
            ]
            argv += ["--compile"] if compiled else []
            argv += ["--cpu-fp16"] if check.args.dry_run else []
            r = train_throughput.bench_loop(train_throughput.parse_args(argv))
            r["meets_target"] = r["loop_over_bare"] >= 0.9
            rows.append(r)
            print(
                f"  {precision} {'compiled' if compiled else 'eager   '}: loop {r['loop_images_per_s']:,.0f} img/s, "
                f"bare {r['bare_images_per_s']:,.0f}, loop/bare {r['loop_over_bare']:.3f}, "
                f"peak {r['peak_memory_mb']} MB",
                flush=True,
            )
    return {"target_loop_over_bare": 0.9, "rows": rows}


def cli(argv: list[str]) -> int:
    """The `invedge` CLI of the full toolkit, in this process (so CUDA memory stats see it)."""
    from invspread_edge_runtime.cli import main

    return main([str(a) for a in argv])


def train_args(check: Check, out: Path, precision: str, epochs: int, eval_every: int) -> list[str]:
    size = check.size
    argv = ["train", "--data", "fashion-mnist", "--out", out, "--overwrite", "--quiet"]
    argv += ["--device", size["device"], "--precision", precision, "--width", size["width"]]
    argv += ["--batch-size", size["batch_size"], "--epochs", epochs, "--schedule", "cosine", "--lr", 0.03]
    argv += [
        "--eval-every",
        eval_every,
        "--eval-memory",
        size["eval_memory"],
        "--eval-queries",
        size["eval_queries"],
    ]
    if size["limit"]:
        argv += ["--limit", size["limit"]]
    return [str(a) for a in argv]


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def peak_memory(fn: Callable[[], int]) -> tuple[int, float | None]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rc = fn()
    peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
    return rc, peak


def train_fp16(check: Check) -> dict[str, Any]:
    run = check.work / "fp16"
    # fp16 autocast needs CUDA; the dry run on a CPU takes the same CLI path in bf16
    precision = "bf16" if check.args.dry_run else "fp16"
    rc, peak = peak_memory(lambda: cli(train_args(check, run, precision, 1, 0)))
    if rc != 0:
        raise RuntimeError(f"invedge train --precision {precision} exited {rc}")
    (m,) = read_metrics(run)
    info = json.loads((run / "run.json").read_text())
    return {
        "precision": precision,
        "precision_note": "fp16 needs CUDA: the dry run trains bf16" if check.args.dry_run else None,
        "grad_scaler": precision == "fp16",
        "run": str(run),
        "epochs": 1,
        "images": m["images"],
        "images_per_s": m["images_per_s"],
        "loss": m["loss"],
        "device": info.get("environment", {}).get("device"),
        "device_name": info.get("environment", {}).get("device_name"),
        "trained_precision": info.get("environment", {}).get("precision"),
        "peak_memory_mb": peak,
    }


def long_run(check: Check) -> dict[str, Any]:
    run = check.work / "long"
    steps = check.report["steps"]
    eager_bf16 = [
        r
        for r in steps.get("throughput", {}).get("rows", [])
        if r["precision"] == "bf16" and not r["compiled"]
    ]
    ips = (
        eager_bf16[0]["loop_images_per_s"]
        if eager_bf16
        else steps.get("train_fp16", {}).get("images_per_s", 0)
    )
    images = check.size["limit"] or FMNIST_TRAIN
    epoch_s = images / max(ips, 1e-9) * 1.15  # the loop's rate, a margin for the epoch's ends
    eval_s = 12.0 if not check.args.dry_run else 2.0  # a full-split kNN: embed 70k + 10k x 60k votes
    available = check.left() - check.size["reserve_s"]
    if check.args.long_epochs:
        epochs = check.args.long_epochs
    elif check.args.dry_run:
        epochs = 2
    else:
        epochs = max(1, int(available / (epoch_s + eval_s / 4)))
    every = max(1, math.ceil(epochs / 6)) if not check.args.dry_run else 1
    print(
        f"  {epochs} epochs planned ({epoch_s:.1f} s each at {ips:,.0f} img/s), kNN every {every}", flush=True
    )
    stop_at = max(60.0 if check.args.dry_run else 10.0, available)
    previous = signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, stop_at)  # the budget: SIGINT, the run saves and stops
    try:
        rc, peak = peak_memory(lambda: cli(train_args(check, run, "bf16", epochs, every)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    metrics = read_metrics(run)
    if rc not in (0, 130) or not metrics:
        raise RuntimeError(f"invedge train exited {rc} with {len(metrics)} epochs done")
    knn = [[m["epoch"], m["knn_accuracy"]] for m in metrics if m.get("knn_accuracy") is not None]
    seconds = sum(m["seconds"] for m in metrics)
    images_seen = sum(m["images"] for m in metrics)
    final = knn[-1][1] if knn else None
    return {
        "run": str(run),
        "precision": "bf16",
        "width": check.size["width"],
        "epochs_planned": epochs,
        "epochs": metrics[-1]["epoch"],
        "stopped_by_budget": rc == 130,
        "knn_every": every,
        "knn": knn,
        "final_knn_accuracy": final,
        "final_knn_epoch": knn[-1][0] if knn else None,
        "knn_protocol": "weighted kNN, k = 200, T = 0.1, full train split as memory, full test split as queries"
        if not check.size["limit"]
        else f"toy: {check.size['eval_memory']} memory, {check.size['eval_queries']} queries",
        "train_seconds": round(seconds, 1),
        "images_per_s": round(images_seen / seconds, 1) if seconds else None,
        "peak_memory_mb": peak,
        "cpu_recipe": CPU_RECIPE,
        "vs_cpu_recipe_points": None
        if final is None
        else round(100 * (final - CPU_RECIPE["knn_accuracy"]), 2),
    }


def cifar10_estimate(check: Check) -> dict[str, Any]:
    long = check.report["steps"]["long_run"]
    ips = long["images_per_s"]
    pixels = (CIFAR10["side"] / FMNIST_SIDE) ** 2  # the network's cost grows with the pixels
    total = CIFAR10["images"] * CIFAR10["epochs"]
    seconds = total / (ips / pixels)
    return {
        "kind": "ARITHMETIC ESTIMATE, not a measurement",
        "formula": "50,000 images x 200 epochs / (measured Fashion-MNIST images/s / (32/28)^2)",
        "measured_images_per_s": ips,
        "pixel_ratio": round(pixels, 3),
        "estimated_images_per_s_at_32px": round(ips / pixels, 1),
        "estimated_hours": round(seconds / 3600, 2),
        "excluded": "kNN evaluations, data loading of a different set, checkpoints",
    }


def export_and_verify(check: Check) -> dict[str, Any]:
    from invspread_edge_runtime.backends.select import find_artifacts
    from invspread_edge_runtime.embedder import open_backend
    from invspread_edge_runtime.verify.backend import verify_backend
    from invspread_edge_runtime.verify.probes import load_probe_set

    run = Path(check.report["steps"]["long_run"]["run"])
    rc = cli(["export", run])
    if rc != 0:
        raise RuntimeError(f"invedge export exited {rc}")
    probes = load_probe_set(run / "export")
    results = []
    for precision, (path, _) in sorted(find_artifacts(run / "export").items()):
        with open_backend(path, "ort-cpu", precision=precision) as backend:
            results.append(verify_backend(backend, probes).to_dict())
    if any(r["status"] != "pass" for r in results):
        raise RuntimeError(f"probe check failed on ort-cpu: {results}")
    return {"export": str(run / "export"), "verify": results}


def bench(check: Check) -> dict[str, Any]:
    run = Path(check.report["steps"]["long_run"]["run"])
    out = check.work / "bench.json"
    argv = [
        "bench",
        run,
        "--runtimes",
        "torch",
        "--precision",
        "fp32,bf16,fp16",
        "--batch",
        check.size["bench_batches"],
    ]
    argv += [
        "--images",
        check.size["bench_images"],
        "--no-accuracy",
        "--json",
        out,
        *check.size["bench_timing"],
    ]
    rc = cli(argv)
    if rc != 0:
        raise RuntimeError(f"invedge bench exited {rc}")
    keep = ("runtime", "precision", "batch", "status", "reason", "error", "device", "p50_ms", "p99_ms")
    keep += ("device_p50_ms", "device_timing", "throughput_ips", "verify")
    rows = [{k: r.get(k) for k in keep} for r in json.loads(out.read_text()) if r.get("record") == "row"]
    return {"rows": rows}


# --- the table --------------------------------------------------------------------------------------


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    steps = report["steps"]
    table = Table(title=f"gpu_check ({'DRY RUN, toy sizes on a CPU' if report['dry_run'] else 'measured'})")
    for header in ("step", "status", "figures"):
        table.add_column(header, overflow="fold")
    for name, s in steps.items():
        figures = s.get("error") or s.get("reason") or ""
        if name == "throughput" and s["status"] == "ok":
            figures = "; ".join(
                f"{r['precision']}{' compiled' if r['compiled'] else ''}: "
                + (
                    f"skipped ({r['skipped']})"
                    if "skipped" in r
                    else f"loop/bare {r['loop_over_bare']:.3f} ({r['loop_images_per_s']:,.0f} img/s), "
                    f"peak {r['peak_memory_mb']} MB"
                )
                for r in s["rows"]
            )
        elif name == "train_fp16" and s["status"] == "ok":
            figures = f"{s['precision']}: {s['images_per_s']:,.0f} img/s, peak {s['peak_memory_mb']} MB"
        elif name == "long_run" and s["status"] == "ok":
            knn = s["final_knn_accuracy"]
            figures = (
                f"{s['epochs']} epochs, {s['images_per_s']:,.0f} img/s, kNN "
                f"{'—' if knn is None else f'{100 * knn:.2f} %'} vs CPU recipe 85.13 % "
                f"({s['vs_cpu_recipe_points']:+} points)"
                if knn is not None
                else f"{s['epochs']} epochs, no kNN"
            )
        elif name == "cifar10_estimate" and s["status"] == "ok":
            figures = f"estimate (arithmetic): {s['estimated_hours']} h for 200 epochs of CIFAR-10"
        elif name == "export_verify" and s["status"] == "ok":
            figures = "; ".join(f"{r['precision']} {r['status']} {r['mean_cosine']:.5f}" for r in s["verify"])
        elif name == "bench" and s["status"] == "ok":
            figures = "; ".join(
                f"{r['precision']} b{r['batch']}: "
                + (f"{r['p50_ms']:.2f} ms" if r["status"] == "ok" else r["status"])
                for r in s["rows"]
            )
        table.add_row(name, s["status"], f"{figures} ({s['seconds']:.0f} s)")
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = DRY if args.dry_run else REAL
    check = Check(args, size)
    check.work.mkdir(parents=True, exist_ok=True)
    env = check.step("environment", lambda: environment(check))
    check.report["environment"] = {k: v for k, v in env.items() if k not in ("status", "seconds")}
    if env["status"] != "ok":
        print_table(check.report)
        return 1
    check.step("throughput", lambda: throughput(check))
    check.step("train_fp16", lambda: train_fp16(check))
    check.step("long_run", lambda: long_run(check))
    check.step("cifar10_estimate", lambda: cifar10_estimate(check), needs=("long_run",))
    check.step("export_verify", lambda: export_and_verify(check), needs=("long_run",))
    check.step("bench", lambda: bench(check), needs=("export_verify",))
    check.write()
    print_table(check.report)
    print(f"wrote {args.out} ({check.elapsed():.0f} s)")
    return 0 if all(s["status"] == "ok" for s in check.report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
