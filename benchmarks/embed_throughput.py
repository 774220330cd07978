"""How close `invedge embed` stays to the JPEG decode limit, on a folder of JPEGs.

    python benchmarks/embed_throughput.py --model runs/fmnist/export            # 2 000 JPEGs, 256 px
    python benchmarks/embed_throughput.py --model runs/fmnist/export --images 200 --jpeg-size 64   # quick

The JPEGs are Fashion-MNIST test images enlarged to `--jpeg-size` pixels (photos must be decoded and
resized; a 28-px file costs nothing to decode). Rows, images/s:
- decode (1 thread): load + resize + centre crop, one thread;
- decode (pool): the same through the Embedder's decode pool (`--decode-workers`): the decode limit;
- model only: the backend on already-decoded batches (`--batch`): the model limit;
- embed (end to end): `embeddings.embed_to_folder`, what `invedge embed` runs: decode pool feeding
  the model, files written.
The end-to-end rate against min(decode pool, model) says how much of the slower stage the pipeline
keeps; the two stages share the CPU here, so the bound is also shown for their sum
(1 / (1/decode + 1/model): both stages on the same cores, no overlap to gain).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an exported .onnx or export folder")
    p.add_argument("--backend", default="auto")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--jpeg-size", type=int, default=256, help="side of the JPEG files")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: all cores)")
    p.add_argument("--decode-workers", type=int, default=0, help="decode threads (0: the Embedder's default)")
    p.add_argument("--folder", type=Path, default=None, help="use these JPEGs instead of making them")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import numpy as np

    from invspread_edge_runtime.embedder import Embedder, collect_images
    from invspread_edge_runtime.embeddings.corpus import embed_to_folder
    from invspread_edge_runtime.preprocess import load_image, to_uint8_chw

    with tempfile.TemporaryDirectory() as work:
        folder = args.folder or make_jpegs(Path(work) / "jpegs", args.images, args.jpeg_size)
        paths, root = collect_images([folder])
        with Embedder(
            args.model,
            backend=args.backend,
            batch_size=args.batch,
            threads=args.threads,
            decode_workers=args.decode_workers,
        ) as emb:
            size = emb.meta.image_size
            print(
                f"{len(paths):,} JPEGs ({args.jpeg_size} px) → {size} px; {emb.info.name} "
                f"{Path(emb.info.model_path).name} ({emb.info.precision}); batch {args.batch}; "
                f"{emb.decode_workers} decode threads; {os.cpu_count()} CPUs"
            )
            rates: dict[str, float] = {}
            few = paths[: max(1, len(paths) // 4)]
            start = time.perf_counter()
            for p in few:
                to_uint8_chw(load_image(p), size)
            rates["decode (1 thread)"] = len(few) / (time.perf_counter() - start)

            start = time.perf_counter()
            decoded = []
            for i in range(0, len(paths), args.batch):
                futures = emb._submit_decode(paths, list(range(i, min(i + args.batch, len(paths)))))
                decoded += [a for f in futures for a in f.result()[0]]
            rates["decode (pool)"] = len(paths) / (time.perf_counter() - start)

            batches = [np.stack(decoded[i : i + args.batch]) for i in range(0, len(decoded), args.batch)]
            emb.embed_uint8(batches[0])  # warm-up (sessions, engines, caches)
            start = time.perf_counter()
            for batch in batches:
                emb.embed_uint8(batch)
            rates["model only"] = len(paths) / (time.perf_counter() - start)

            start = time.perf_counter()
            embed_to_folder(emb, paths, root, Path(work) / "out.emb")
            rates["embed (end to end)"] = len(paths) / (time.perf_counter() - start)

    limit = min(rates["decode (pool)"], rates["model only"])
    shared = 1 / (1 / rates["decode (pool)"] + 1 / rates["model only"])
    for name, rate in rates.items():
        print(f"  {name:<22} {rate:>10,.0f} images/s")
    e2e = rates["embed (end to end)"]
    print(
        f"end to end = {e2e / limit:.0%} of the slower stage ({limit:,.0f}/s), "
        f"{e2e / shared:.0%} of the shared-CPU bound ({shared:,.0f}/s)"
    )


def make_jpegs(folder: Path, count: int, side: int) -> Path:
    from PIL import Image

    from invspread_edge_runtime.evaluation.datasets import open_dataset

    images = open_dataset("fashion-mnist", "test").images
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = images[i % len(images)].transpose(1, 2, 0)
        Image.fromarray(pixels).resize((side, side), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


if __name__ == "__main__":
    sys.exit(main())
