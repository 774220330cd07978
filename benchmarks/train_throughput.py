"""Does the training loop hide its data work, and is the stable loss as fast as the literal one?

    python benchmarks/train_throughput.py                          # width 32, batch 128, 20 steps
    python benchmarks/train_throughput.py --width 64 --steps 10    # the paper's width
    python benchmarks/train_throughput.py --width 8 --steps 3 --warmup 1 --loss-reps 5   # quick check
    python benchmarks/train_throughput.py --width 16 --compile     # torch.compile'd, and eager for scale

Part 1, images/s (one image = its two views), same network, optimizer and precision, same process:
- loop: `train_one_epoch` on Fashion-MNIST: batch selection from the uint8 array, the batched
  two-view augmentation, forward, loss, backward, SGD step (what `invedge train` runs);
- bare: forward + loss + backward + step on pre-made, already-augmented tensors.
loop / bare is the share of the model's speed the loop keeps (target ≥ 0.9). Bare runs before and
after the loop and the two are averaged, so drift of a shared machine shows up as their spread.

Part 2, milliseconds for forward + backward of the loss at 2B = 256, d = 128 (median of
`--loss-reps`): the stable log-space InvariantSpreadLoss against the literal exp/divide/log
reading of Eq. 3–7 (`naive_invariant_spread_loss`). Target: stable ≤ literal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--arch", default="cifar_resnet18")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (2× views)")
    p.add_argument("--steps", type=int, default=20, help="measured steps per phase")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps before each phase")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 (fp16 on CUDA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (invedge train --compile)")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (inductor: what invedge train uses; eager: tracing only, a quick check)",
    )
    p.add_argument(
        "--cpu-fp16",
        action="store_true",
        help="allow fp16 autocast + grad scaler on a CPU (a toy-size check of the CUDA fp16 path only)",
    )
    p.add_argument("--loss-reps", type=int, default=50)
    p.add_argument("--loss-batch", type=int, default=128, help="B of the loss benchmark (2B embeddings)")
    p.add_argument("--loss-dim", type=int, default=128)
    p.add_argument("--skip-loop", action="store_true", help="only the loss benchmark")
    p.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    return p.parse_args(argv)


def bench_loop(args: argparse.Namespace) -> dict:
    import torch

    from invspread_edge import distributed
    from invspread_edge.augment import AugmentConfig, TwoViews
    from invspread_edge.config import TrainConfig, check_compiler
    from invspread_edge.data import UInt8Source, load_split, mean_std
    from invspread_edge.loss import InvariantSpreadLoss
    from invspread_edge.model import create_model
    from invspread_edge.precision import Precision, prefers_channels_last, resolve_device, resolve_precision
    from invspread_edge.train_events import EpochStats, StopFlag
    from invspread_edge.training import LoopState, optimizer_step, train_one_epoch

    device = resolve_device(args.device)
    if args.precision == "fp16" and device.type == "cpu" and args.cpu_fp16:
        precision = Precision("fp16", "cpu")  # gpu_check --dry-run: the scaler path, at toy size
    else:
        precision = resolve_precision(args.precision, device)
    channels_last = prefers_channels_last(precision)
    b = args.batch_size
    n_images = b * (args.warmup + args.steps)
    images = load_split("fashion-mnist", "train", None, n_images)
    source = UInt8Source(images, 28, pin_memory=device.type == "cuda")
    mean, std = mean_std(source)
    augment = TwoViews(AugmentConfig(28, mean, std))

    torch.manual_seed(0)
    model = create_model(args.arch, width=args.width).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    eager = model
    if args.compile:
        if args.compile_backend == "inductor":
            check_compiler(device)
        model = torch.compile(model, backend=args.compile_backend)
    loss_fn = InvariantSpreadLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None

    # pre-made inputs for the bare step: real augmented views, made once
    g = torch.Generator(device=device).manual_seed(0)
    first = torch.from_numpy(source.array[:b]).to(device)
    v1, v2 = augment(first, g)
    x_ready = torch.cat([v1, v2])
    if channels_last:
        x_ready = x_ready.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare(steps: int, net: torch.nn.Module = model) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            with precision.autocast():
                z = net(x_ready)
            loss = loss_fn(z[:b], z[b:])
            optimizer_step(loss, opt, scaler)
        loss.item()
        sync()
        return steps * b / (time.perf_counter() - t0)

    cfg = TrainConfig(batch_size=b, epochs=1, seed=0, workers=0)
    steps_per_epoch = len(images) // b
    state = LoopState(
        cfg=cfg,
        device=device,
        precision=precision,
        augment=augment,
        source=source,
        env=distributed.DistEnv(0, 1, 0),
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch,
        channels_last=channels_last,
        stop=StopFlag(),
    )

    def loop(epoch: int, first_step: int) -> float:
        """Run `train_one_epoch` from `first_step` to the end of the epoch; images/s of wall time."""
        stats = EpochStats(steps=first_step)
        sync()
        t0 = time.perf_counter()
        stats = train_one_epoch(model, loss_fn, opt, scaler, state, epoch, stats, None)
        sync()
        return stats.images / (time.perf_counter() - t0)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bare(args.warmup)
    loop(1, steps_per_epoch - args.warmup)  # warm-up: the last batches of another epoch
    bare_before = bare(args.steps)
    loop_rate = loop(0, args.warmup)  # measured: `steps` batches
    bare_after = bare(args.steps)
    bare_rate = (bare_before + bare_after) / 2
    extra = {}
    if args.compile:  # the eager step of the same weights, between two compiled ones
        bare(args.warmup, eager)
        eager_rate = bare(args.steps, eager)
        compiled_again = bare(args.steps)
        extra = {
            "eager_bare_images_per_s": round(eager_rate, 2),
            "compiled_over_eager": round((bare_after + compiled_again) / 2 / eager_rate, 3),
        }
    return {
        "device": str(device),
        "precision": precision.name,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "width": args.width,
        "batch_size": b,
        "steps": args.steps,
        "bare_images_per_s_before": round(bare_before, 2),
        "bare_images_per_s_after": round(bare_after, 2),
        "bare_images_per_s": round(bare_rate, 2),
        "loop_images_per_s": round(loop_rate, 2),
        "loop_over_bare": round(loop_rate / bare_rate, 3),
        "compiled": args.compile,
        "compile_backend": args.compile_backend if args.compile else None,
        "channels_last": channels_last,
        "grad_scaler": scaler is not None,
        "augment_device": str(x_ready.device),  # the two-view augmentation ran here
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda"
        else None,
        **extra,
    }


def bench_loss(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from invspread_edge.loss import InvariantSpreadLoss, naive_invariant_spread_loss
    from invspread_edge.precision import resolve_device

    device = resolve_device(args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    b, d = args.loss_batch, args.loss_dim
    z = F.normalize(torch.randn(2 * b, d, generator=g), dim=1).to(device)
    stable = InvariantSpreadLoss(0.1)

    def time_fn(fn) -> tuple[float, float]:
        times = []
        value = 0.0
        for rep in range(args.loss_reps + 3):
            x = z.clone().requires_grad_()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = fn(x[:b], x[b:])
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rep >= 3:
                times.append((time.perf_counter() - t0) * 1000)
            value = float(loss.detach())
        return statistics.median(times), value

    # interleave the two so that machine drift hits both alike
    stable_ms, stable_value = time_fn(stable)
    naive_ms, naive_value = time_fn(lambda a, c: naive_invariant_spread_loss(a, c, 0.1))
    stable_ms2, _ = time_fn(stable)
    naive_ms2, _ = time_fn(lambda a, c: naive_invariant_spread_loss(a, c, 0.1))
    stable_ms, naive_ms = min(stable_ms, stable_ms2), min(naive_ms, naive_ms2)
    return {
        "embeddings": 2 * b,
        "dim": d,
        "stable_ms": round(stable_ms, 3),
        "literal_ms": round(naive_ms, 3),
        "stable_over_literal": round(stable_ms / naive_ms, 3),
        "same_value": abs(stable_value - naive_value) < 1e-4 * abs(naive_value),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict = {}
    if not args.skip_loop:
        r = out["loop"] = bench_loop(args)
        print(
            f"training loop{' (compiled)' if r['compiled'] else ''}, {r['arch']} width {r['width']}, "
            f"batch {r['batch_size']}, {r['device']} "
            f"{r['precision']}, {r['threads']} threads, {r['steps']} steps per phase"
        )
        print(
            f"  bare step (pre-made tensors): {r['bare_images_per_s']:8.1f} img/s "
            f"(before {r['bare_images_per_s_before']:.1f}, after {r['bare_images_per_s_after']:.1f})"
        )
        print(f"  whole loop (data + augment): {r['loop_images_per_s']:8.1f} img/s")
        print(f"  loop / bare:                 {r['loop_over_bare']:8.3f}   (target >= 0.9)")
        if r["compiled"]:
            print(f"  eager bare step:             {r['eager_bare_images_per_s']:8.1f} img/s")
            print(f"  compiled / eager bare:       {r['compiled_over_eager']:8.3f}")
    r = out["loss"] = bench_loss(args)
    print(f"loss forward+backward, 2B = {r['embeddings']}, d = {r['dim']} (median of {args.loss_reps})")
    print(f"  stable (log space):  {r['stable_ms']:8.3f} ms")
    print(f"  literal (Eq. 3-7):   {r['literal_ms']:8.3f} ms")
    print(
        f"  stable / literal:    {r['stable_over_literal']:8.3f}   (target <= 1); same value: {r['same_value']}"
    )
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
