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
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace finished embeddings in --out (the old ones stay until the new ones are complete).",
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Keep the finished embeddings in --out and embed only the images missing from them "
        "(those that could not be read before, once fixed).",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Embed images into an embeddings folder; run it again to resume after an interruption."""
    from .. import console
    from ..embedder import find_images
    from ..embeddings import DTYPES, MANIFEST, VECTORS, EmbeddingInterrupted, check_output
    from ..errors import ConfigError, Interrupted
    from ..files import human_size
    from ..locks import exclusive_lock

    if dtype not in DTYPES:
        raise ConfigError(f"Invalid --dtype {dtype!r}. Only {', '.join(DTYPES)} are supported")
    if batch < 1 or threads < 0:
        raise ConfigError("Invalid --batch/--threads. --batch must be ≥ 1 and --threads ≥ 0")
    if overwrite and retry_failed:
        raise ConfigError(
            "--overwrite and --retry-failed contradict each other",
            "Pass --overwrite to embed everything again, or --retry-failed to keep what is done",
        )
    check_output(out, overwrite, retry_failed)  # before any work, and again under the lock
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        # --out . (or ..): a swap cannot rename "." (EBUSY), and once the old folder is gone a
        # relative path would point into the removed working folder
        out = out.absolute().resolve()
    resume = resume_command(model, images, out, backend, precision, dtype, overwrite, retry_failed)
    started = time.perf_counter()
    try:
        found = find_images(images)
        paths, root = found.paths, found.root
        # the lock (which also proves --out writable) before the model opens; a second writer of
        # the same folder waits here, then finds the first one's result and refuses
        with exclusive_lock(out, "embeddings folder"):
            check_output(out, overwrite, retry_failed)
            manifest, info = _embed_locked(
                model,
                paths,
                root,
                out,
                backend,
                batch,
                threads,
                precision,
                dtype,
                overwrite,
                retry_failed,
                found.note(),
            )
    except EmbeddingInterrupted as exc:
        kept = f"{exc.saved:,} of {exc.total:,} images are embedded and saved in {exc.work / 'parts'}"
        if overwrite and exc.work != exc.out:
            kept += f" ({out} is unchanged until the new embeddings are complete)"
        raise Interrupted(f"stopped by Ctrl-C; {kept}", f"Resume with: {resume}") from exc
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"stopped by Ctrl-C before any image was embedded; {out} is unchanged",
            f"Run again with: {resume}",
        ) from exc
    seconds = time.perf_counter() - started
    size = (out / VECTORS).stat().st_size + (out / MANIFEST).stat().st_size
    rate = (manifest["count"] + manifest["failed_count"] - manifest["resumed"]) / max(
        manifest["seconds"], 1e-9
    )
    if json_out:
        console.print_json(
            manifest
            | {
                "path": str(out),
                "total_seconds": round(seconds, 3),
                "duplicates_skipped": len(found.duplicates),
            }
        )
    if manifest["failed_count"]:
        first = manifest["failed"][0]
        n = manifest["failed_count"]
        retry = resume_command(model, images, out, backend, precision, dtype, False, True)
        console.warn(
            f"{n} unreadable image{'s' * (n != 1)} skipped (first: {first['reason']}). "
            f"Fix or replace {'them' if n != 1 else 'it'}, then add {'them' if n != 1 else 'it'} with: {retry}"
        )
    if manifest["resumed"]:
        what = "kept from the finished folder" if retry_failed else "were already done"
        console.info(f"resumed: {manifest['resumed']:,} images {what}")
    if retry_failed and manifest["resumed"] == manifest["count"] and not manifest["failed_count"]:
        console.info(f"nothing to retry: every image given is already in {out}")
    console.success(
        f"{manifest['count']:,} embeddings ({manifest['dim']}-d {dtype}) → {out} ({human_size(size)}) "
        f"in {seconds:.1f} s ({rate:,.0f} img/s with {info.name})"
    )
    named = out if out.name not in ("", "..") else out.absolute().resolve()  # --out . has no name to reuse
    console.info(f"next: invedge index build {out} --out {named.with_suffix('.index')}")


def _embed_locked(
    model: Path,
    paths: list[Path],
    root: Path,
    out: Path,
    backend: str,
    batch: int,
    threads: int,
    precision: str | None,
    dtype: str,
    overwrite: bool,
    retry_failed: bool,
    note: str | None,
):
    """Open the model and embed into `out` (whose lock the caller holds); (manifest, backend info)."""
    from .. import console
    from ..embedder import Embedder
    from ..embeddings import embed_to_folder

    with Embedder(model, backend=backend, batch_size=batch, threads=threads, precision=precision) as embedder:
        report_backend(embedder)
        if note is not None:
            console.warn(note)
        info = embedder.info
        console.info(
            f"embedding {len(paths):,} images from {root} with {info.name} ({Path(info.model_path).name})"
        )
        with console.progress() as bar:
            task = bar.add_task("embed", total=len(paths))

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done)

            manifest = embed_to_folder(
                embedder,
                paths,
                root,
                out,
                dtype=dtype,
                overwrite=overwrite,
                retry_failed=retry_failed,
                on_progress=advance,
                lock=False,
            )
    return manifest, info


def resume_command(
    model: Path,
    images: list[Path],
    out: Path,
    backend: str,
    precision: str | None,
    dtype: str,
    overwrite: bool,
    retry_failed: bool,
) -> str:
    """The `invedge embed` command line that continues this run (what matters for resuming)."""
    import shlex

    argv = ["invedge", "embed", str(model), *(str(i) for i in images), "--out", str(out)]
    if backend != "auto":
        argv += ["--backend", backend]
    if precision:
        argv += ["--precision", precision]
    if dtype != "float32":
        argv += ["--dtype", dtype]
    if overwrite:
        argv.append("--overwrite")
    if retry_failed:
        argv.append("--retry-failed")
    return shlex.join(argv)


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
