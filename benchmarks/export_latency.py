"""CPU latency of the exported artifacts against PyTorch eager, in one process, as ratios.

    python benchmarks/export_latency.py                       # width 64 (the paper's), random weights
    python benchmarks/export_latency.py --run runs/fmnist     # a trained checkpoint
    python benchmarks/export_latency.py --width 8 --iters 3 --warmup 1 --batches 1,4   # smoke test

Rows: torch eager fp32, torch eager bf16 (autocast), ONNX Runtime CPU fp32, int8 (symmetric, the
TensorRT artifact) and int8-cpu (uint8 activations). Each row: p50 of `--iters` timed calls after
`--warmup` calls, same input, same thread count everywhere. Ratios are speed-ups (higher = faster)
against ONNX fp32 and torch fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", type=Path, default=None, help="a run folder or checkpoint (default: random weights)"
    )
    p.add_argument("--arch", default="cifar_resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batches", default="1,64", help="comma list of batch sizes")
    p.add_argument("--iters", type=int, default=30, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="threads for torch and ONNX Runtime alike")
    p.add_argument("--calib-count", type=int, default=128, help="calibration images for the INT8 builds")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def p50_ms(fn: Callable[[], object], iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build_artifacts(args: argparse.Namespace, work: Path):
    """The model, its ModelMeta and the three ONNX files (fp32, int8, int8-cpu)."""
    import torch

    from invspread_edge.checkpoint import build_model, load_checkpoint
    from invspread_edge.model import create_model
    from invspread_edge_export import calibrate, calibration_set, quantize
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.onnx_export import export_onnx

    if args.run is not None:
        ckpt = load_checkpoint(args.run)
        model, meta = build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256)
    else:
        torch.manual_seed(0)
        model = create_model(args.arch, width=args.width, embedding_dim=args.embedding_dim).eval()
        config = dict(
            arch=args.arch, width=args.width, embedding_dim=args.embedding_dim, image_size=args.image_size,
            mean=[0.2860] * 3, std=[0.3530] * 3,
        )  # fmt: skip
        meta = meta_from_config(config, "0" * 64)
    paths = {"fp32": export_onnx(model, meta, work / "model.onnx")}
    calib = calibration_set.default_set("fashion-mnist", args.calib_count)
    reader = calibrate.CalibrationReader(calib, meta)
    prepared = quantize.prepare(paths["fp32"], work / "prepared.onnx")
    cache = calibrate.compute_ranges(prepared, reader, "minmax", work / "calib.json")
    for target in quantize.TARGETS:
        paths[target] = quantize.quantize(prepared, work / quantize.FILENAMES[target], target, cache)
    return model, meta, paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    import torch
    from rich.console import Console
    from rich.table import Table

    from invspread_edge_export.images import model_inputs
    from invspread_edge_runtime.evaluation.datasets import open_dataset
    from invspread_edge_runtime.files import human_size

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="invedge-bench-") as tmp:
        model, meta, paths = build_artifacts(args, Path(tmp))
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        test = open_dataset("fashion-mnist", "test")
        inputs = model_inputs(test, meta, np.arange(max(batches)))  # real images, the runtime's preprocessing

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sessions = {
            name: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            for name, path in paths.items()
        }
        rows: dict[str, dict[int, float]] = {}
        for batch in batches:
            x = np.ascontiguousarray(inputs[:batch])
            xt = torch.from_numpy(x)

            def torch_fp32(xt=xt):
                with torch.inference_mode():
                    return model(xt)

            def torch_bf16(xt=xt):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(xt)

            runners: dict[str, Callable[[], object]] = {"torch fp32": torch_fp32, "torch bf16": torch_bf16}
            for name, session in sessions.items():
                runners[f"onnx {name}"] = lambda s=session, x=x: s.run(None, {meta.input_name: x})
            for name, fn in runners.items():
                console.print(f"batch {batch}: {name}", highlight=False)
                rows.setdefault(name, {})[batch] = p50_ms(fn, args.iters, args.warmup)

    table = Table(
        title=f"p50 latency, {args.threads} threads, {meta.arch} width {args.width if args.run is None else 'from run'}"
    )
    table.add_column("runtime")
    for batch in batches:
        table.add_column(f"batch {batch} ms", justify="right")
        table.add_column("× onnx fp32", justify="right")
        table.add_column("× torch fp32", justify="right")
    for name, per_batch in rows.items():
        cells = []
        for batch in batches:
            ms = per_batch[batch]
            cells += [
                f"{ms:.2f}",
                f"{rows['onnx fp32'][batch] / ms:.2f}",
                f"{rows['torch fp32'][batch] / ms:.2f}",
            ]
        table.add_row(name, *cells)
    Console().print(table)
    Console().print(
        "ONNX sizes: " + ", ".join(f"{name} {human_size(size)}" for name, size in sizes.items()),
        highlight=False,
    )
    if args.json is not None:
        result = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "p50_ms": {name: {str(b): ms for b, ms in per.items()} for name, per in rows.items()},
            "bytes": sizes,
            "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
