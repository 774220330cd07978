"""Does the preset matter where a flip changes the meaning? scikit-learn's `digits` (1 797 scans
of handwritten digits, 8 × 8 px) rendered as a labelled folder, trained with the default preset
(natural: flips half the views) and with no-flip, same budget and seeds; kNN by `invedge eval`'s
code (a folder: leave-one-out, each image against all the others).

    python benchmarks/digits_flip.py                       # → runs/digits (about 4 minutes on 2 cores)
    python benchmarks/digits_flip.py --epochs 2 --seeds 0 --out /tmp/d     # check the script

A flipped 2 looks like a 5 and a flipped 7 like nothing: training to ignore flips asks the network
to map different digits together. Prints the table and writes OUT/digits_flip.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
PRESETS = ("natural", "no-flip")


def render_digits(folder: Path) -> int:
    """digits as PNGs in one sub-folder per class (the folder layout `invedge` reads labels from)."""
    from sklearn.datasets import load_digits  # ships its data: nothing is downloaded

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = np.round(image * (255 / 16)).astype(np.uint8)  # 17 gray levels → 0-255
        Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{i:04d}.png")
    return len(digits.images)


def train_and_eval(data: Path, run: Path, preset: str, seed: int, args: argparse.Namespace) -> float:
    subprocess.run(
        [BIN / "invedge", "train", "--data", str(data), "--out", str(run), "--overwrite", "-q",
         "--preset", preset, "--seed", str(seed), "--width", str(args.width), "--epochs", str(args.epochs),
         "--batch-size", "128", "--lr", "0.03", "--schedule", "cosine", "--eval-every", "0"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    result = subprocess.run(
        [BIN / "invedge", "eval", str(run), "--json"], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout)["knn_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/digits"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    data = args.out / "images"
    if not data.is_dir():
        print(f"rendered {render_digits(data)} digits into {data}")
    results: dict[str, list[float]] = {p: [] for p in PRESETS}
    for seed in args.seeds:
        for preset in PRESETS:
            knn = train_and_eval(data, args.out / f"{preset}-{seed}", preset, seed, args)
            results[preset].append(knn)
            print(f"seed {seed} {preset:<8} kNN {100 * knn:.2f}%", flush=True)
    print(f"\n{'preset':<10} {'mean kNN':>9} {'per seed':>24}")
    for preset, values in results.items():
        per_seed = " ".join(f"{100 * v:.2f}" for v in values)
        print(f"{preset:<10} {100 * statistics.mean(values):8.2f}% {per_seed:>24}")
    margin = [b - a for a, b in zip(results["natural"], results["no-flip"], strict=True)]
    print(f"no-flip − natural: {100 * statistics.mean(margin):+.2f} points (per seed: "
          + ", ".join(f"{100 * m:+.2f}" for m in margin) + ")")  # fmt: skip
    summary = {
        "epochs": args.epochs,
        "width": args.width,
        "seeds": args.seeds,
        "knn": results,
        "margin": margin,
    }
    (args.out / "digits_flip.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
