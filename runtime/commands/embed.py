"""`invedge embed MODEL IMAGES --out photos.emb`: embeddings + ids + manifest, resumable."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .options import BackendOpt, BatchOpt, JsonOpt, ModelArg, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)


def embed(
    model: Path = ModelArg,
    images: list[Path] = typer.Argument(
        ..., help="Image files and/or folders (searched recursively).", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Embeddings folder to write (e.g. photos.emb).", show_default=False
    ),
    backend: str = BackendOpt,
    batch: int = BatchOpt,
    threads: int = ThreadsOpt,
    precision: str | None = typer.Option(
        None, "--precision", help="Artifact to use from an export folder (default: the best for the backend)."
    ),
    dtype: str = typer.Option(
        "float32", "--dtype", help="Stored precision: float32 or float16 (half the size)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace finished embeddings in --out."),
    json_out: bool = JsonOpt,
) -> None:
    """Embed images into an embeddings folder; run it again to resume after an interruption."""
    from .. import console
    from ..embed import Embedder, collect_images
    from ..embeddings import DTYPES, MANIFEST, VECTORS, embed_to_folder
    from ..errors import InvedgeError
    from ..files import human_size

    if dtype not in DTYPES:
        raise InvedgeError(f"Invalid --dtype {dtype!r}. Only {', '.join(DTYPES)} are supported")
    if batch < 1 or threads < 0:
        raise InvedgeError("Invalid --batch/--threads. --batch must be ≥ 1 and --threads ≥ 0")
    started = time.perf_counter()
    paths, root = collect_images(images)
    with Embedder(model, backend=backend, batch_size=batch, threads=threads, precision=precision) as embedder:
        report_backend(embedder)
        info = embedder.info
        console.info(
            f"embedding {len(paths):,} images from {root} with {info.name} ({Path(info.model_path).name})"
        )
        with console.progress() as bar:
            task = bar.add_task("embed", total=len(paths))

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done)

            manifest = embed_to_folder(
                embedder, paths, root, out, dtype=dtype, overwrite=overwrite, on_progress=advance
            )
    seconds = time.perf_counter() - started
    size = (out / VECTORS).stat().st_size + (out / MANIFEST).stat().st_size
    rate = (manifest["count"] + manifest["failed_count"] - manifest["resumed"]) / max(
        manifest["seconds"], 1e-9
    )
    if json_out:
        console.print_json(manifest | {"path": str(out), "total_seconds": round(seconds, 3)})
    if manifest["failed_count"]:
        shown = ", ".join(f["id"] for f in manifest["failed"][:3])
        console.warn(
            f"{manifest['failed_count']} unreadable images skipped ({shown}{', …' if manifest['failed_count'] > 3 else ''})"
        )
    if manifest["resumed"]:
        console.info(f"resumed: {manifest['resumed']:,} images were already done")
    console.success(
        f"{manifest['count']:,} embeddings ({manifest['dim']}-d {dtype}) → {out} ({human_size(size)}) "
        f"in {seconds:.1f} s ({rate:,.0f} img/s with {info.name})"
    )
    console.info(f"next: invedge index build {out} --out {out.with_suffix('.index')}")


def report_backend(embedder) -> None:
    """One line for the backend chosen, one dim line for the faster ones that were not usable."""
    from rich.markup import escape

    from .. import console

    chosen = [n for n in embedder.notes if ": skipped" not in n]
    skipped = [n.replace(": skipped (", " (") for n in embedder.notes if ": skipped" in n]
    info = embedder.info
    console.info(chosen[-1] if chosen else f"{info.name}: {Path(info.model_path).name} on {info.device}")
    if skipped:
        console.info(f"[dim]  not used: {escape('; '.join(skipped))}[/dim]")
