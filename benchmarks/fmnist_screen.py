"""Short Fashion-MNIST runs that differ in a few settings, then one table: what to give the
30-minute recipe (benchmarks/fmnist_recipe.sh).

    python benchmarks/fmnist_screen.py "" "temperature=0.2" "detach_keys=false" "aug=size=20"
    python benchmarks/fmnist_screen.py --epochs 4 --limit 0 --eval-memory 0 "" "aug=crop=0.35-1" "aug=jitter=0.2"
    python benchmarks/fmnist_screen.py --limit 2048 --epochs 1 --width 8 --out /tmp/s "" "temperature=0.2"

Each argument is one run: space-separated TrainConfig fields over the screen's base (the recipe's
width, batch, lr, cosine schedule and seed; "" is the base itself). The runs are sequential, so
each has both cores and the seconds column compares their cost on this machine. Every run's kNN is
the training monitor's after the last epoch, with the same memory and queries for all runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

from invspread_edge import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help='TrainConfig fields over the base, e.g. "temperature=0.2"')
    p.add_argument("--out", default="runs/screen")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=19200, help="training images (a fixed shuffle; 0: all)")
    p.add_argument("--eval-memory", type=int, default=20000, help="0: the whole train split")
    p.add_argument("--eval-queries", type=int, default=0, help="0: the whole test split")
    return p.parse_args(argv)


def variant(base: TrainConfig, text: str) -> TrainConfig:
    """`base` with `field=value ...` set, each value read as its field's type."""
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    changes = {}
    for item in text.split():
        name, _, value = item.partition("=")
        kind = types[name]  # KeyError names an unknown field
        if "bool" in kind:
            changes[name] = value.lower() in ("1", "true", "yes")
        elif "int" in kind and value.lower() != "none":
            changes[name] = int(value)
        elif "float" in kind:
            changes[name] = float(value)
        else:
            changes[name] = None if value.lower() == "none" else value
    return replace(base, **changes)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    base = TrainConfig(
        data="fashion-mnist",
        width=args.width,
        epochs=args.epochs,
        limit=args.limit or None,
        schedule="cosine",
        batch_size=128,
        lr=0.03,
        seed=0,
        eval_memory=args.eval_memory,
        eval_queries=args.eval_queries,
    )
    rows = []
    for i, text in enumerate(args.variants, 1):
        cfg = replace(variant(base, text), out=str(out / str(i)))
        cfg = replace(cfg, eval_every=cfg.epochs)  # the kNN after the last epoch only
        print(f"== {text or 'base'} → {cfg.out}", flush=True)
        train(cfg, overwrite=True, show_progress=False)
        metrics = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
        rows.append(
            dict(
                variant=text or "base",
                knn=metrics[-1]["knn_accuracy"],
                seconds=sum(m["seconds"] for m in metrics),
                loss=metrics[-1]["loss"],
            )
        )
        print(f"   kNN {100 * rows[-1]['knn']:.2f} %, {rows[-1]['seconds']:.0f} s", flush=True)
    first = rows[0]["knn"]
    print(f"\n{'variant':<36} {'kNN':>8} {'vs first':>9} {'train s':>8} {'loss':>7}")
    for r in rows:
        print(
            f"{r['variant']:<36} {100 * r['knn']:7.2f}% {100 * (r['knn'] - first):+8.2f} "
            f"{r['seconds']:8.0f} {r['loss']:7.4f}"
        )
    (out / "screen.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
