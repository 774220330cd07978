"""Write images of a data set to a folder of PNG files, one sub-folder per class.

Gives the demo (and anyone trying the runtime) real image files to embed and search:
    python scripts/sample_images.py --data fashion-mnist --split test --count 300 --out runs/demo/gallery
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from invspread_edge_runtime.evaluation.datasets import open_dataset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--offset", type=int, default=0, help="skip this many images of the fixed shuffle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    data = open_dataset(args.data, args.split)
    order = np.random.default_rng(args.seed).permutation(len(data))[args.offset : args.offset + args.count]
    for i in order:
        label = data.classes[data.labels[i]] if data.labels is not None else "images"
        folder = args.out / label.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        data.pil(int(i)).save(folder / f"{args.split}-{i:05d}.png")
    print(f"wrote {len(order)} images to {args.out}")


if __name__ == "__main__":
    main()
