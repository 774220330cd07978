"""`invedge embed MODEL IMAGES --out photos.emb`: embeddings + ids + manifest, resumable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..bounds import RAY_ACTORS, RAY_GPUS_PER_ACTOR, helped
from ..embeddings.layout import DEFAULT_DTYPE, DTYPES
from .options import BackendOpt, BatchOpt, JsonOpt, ModelArg, ThreadsOpt

if TYPE_CHECKING:
    from ..embeddings.corpus import EmbedOptions, EmbedResult


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
        DEFAULT_DTYPE, "--dtype", help=f"Stored precision: {' or '.join(DTYPES)} (half the size)."
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
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Run on Ray: 'auto' (the cluster RAY_ADDRESS names, else a local Ray on all cores and GPUs) "
        "or a cluster's address (HOST:6379, ray://HOST:10001). Images and model at the same paths on "
        "every node. Needs the [ray] extra.",
        metavar="ADDRESS",
        show_default=False,
    ),
    ray_actors: int | None = typer.Option(
        None,
        "--ray-actors",
        help=helped("With --ray: embedding actors (default: one per GPU, else one per node).", RAY_ACTORS),
        show_default=False,
    ),
    ray_gpus_per_actor: float | None = typer.Option(
        None,
        "--ray-gpus-per-actor",
        help=helped(
            "With --ray: GPUs each actor holds (default: 1 where the cluster has GPUs, else 0).",
            RAY_GPUS_PER_ACTOR,
        ),
        show_default=False,
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Embed images into an embeddings folder; run it again to resume after an interruption."""
    from .. import console
    from ..embeddings.corpus import EmbedOptions

    options = EmbedOptions(
        model,
        images,
        out,
        backend=backend,
        batch=batch,
        threads=threads,
        precision=precision,
        dtype=dtype,
        overwrite=overwrite,
        retry_failed=retry_failed,
        ray=ray,
        ray_actors=ray_actors,
        ray_gpus_per_actor=ray_gpus_per_actor,
    )
    result = _embed_with_progress(options)
    if json_out:
        console.print_json(result.to_dict())
    _report(options, result)


def _embed_with_progress(options: EmbedOptions) -> EmbedResult:
    """`embeddings.job.embed_images` with a progress bar; Ctrl-C becomes the line that says how to resume."""
    from .. import console
    from ..embeddings.corpus import EmbeddingInterrupted
    from ..embeddings.job import embed_images
    from ..errors import Interrupted

    bar, task = console.progress(), None

    def started(embedder, found) -> None:  # embedder: a RayPlan with --ray
        nonlocal task
        if options.ray is None:
            report_backend(embedder)
            what = f"{embedder.info.name} ({Path(embedder.info.model_path).name})"
        else:
            console.info(f"Ray: {embedder.describe()}")
            what = f"{embedder.model_path.name} on Ray"
        if (note := found.note()) is not None:
            console.warn(note)
        console.info(f"embedding {len(found.paths):,} images from {found.root} with {what}")
        bar.start()
        task = bar.add_task("embed", total=len(found.paths))

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done)

    try:
        return embed_images(options, on_start=started, on_progress=advance)
    except EmbeddingInterrupted as exc:
        kept = f"{exc.saved:,} of {exc.total:,} images are embedded and saved in {exc.work / 'parts'}"
        if options.overwrite and exc.work != exc.out:
            kept += f" ({options.out} is unchanged until the new embeddings are complete)"
        raise Interrupted(f"stopped by Ctrl-C; {kept}", f"Resume with: {resume_command(options)}") from exc
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"stopped by Ctrl-C before any image was embedded; {options.out} is unchanged",
            f"Run again with: {resume_command(options)}",
        ) from exc
    finally:
        bar.stop()


def _report(options: EmbedOptions, result: EmbedResult) -> None:
    """The lines after an embed: images skipped, resumed, the summary and the next command."""
    from .. import console
    from ..embeddings.layout import MANIFEST, VECTORS
    from ..files import human_size

    manifest, seconds, out = result.manifest, result.seconds, result.out
    size = (out / VECTORS).stat().st_size + (out / MANIFEST).stat().st_size
    rate = (manifest["count"] + manifest["failed_count"] - manifest["resumed"]) / max(
        manifest["seconds"], 1e-9
    )
    if manifest["failed_count"]:
        first = manifest["failed"][0]
        n = manifest["failed_count"]
        retry = resume_command(replace(options, overwrite=False, retry_failed=True))
        console.warn(
            f"{n} unreadable image{'s' * (n != 1)} skipped (first: {first['reason']}). "
            f"Fix or replace {'them' if n != 1 else 'it'}, then add {'them' if n != 1 else 'it'} with: {retry}"
        )
    if manifest["resumed"]:
        what = "kept from the finished folder" if options.retry_failed else "were already done"
        console.info(f"resumed: {manifest['resumed']:,} images {what}")
    if options.retry_failed and manifest["resumed"] == manifest["count"] and not manifest["failed_count"]:
        console.info(f"nothing to retry: every image given is already in {out}")
    console.success(
        f"{manifest['count']:,} embeddings ({manifest['dim']}-d {options.dtype}) → {out} ({human_size(size)}) "
        f"in {seconds:.1f} s ({rate:,.0f} img/s with {result.backend.name}{' on Ray' * (options.ray is not None)})"
    )
    named = out if out.name not in ("", "..") else out.absolute().resolve()  # --out . has no name to reuse
    console.info(f"next: invedge index build {out} --out {named.with_suffix('.index')}")


def resume_command(options: EmbedOptions) -> str:
    """The `invedge embed` command line that continues this run (what matters for resuming)."""
    import shlex

    argv = [
        "invedge",
        "embed",
        str(options.model),
        *(str(i) for i in options.images),
        "--out",
        str(options.out),
    ]
    if options.backend != "auto":
        argv += ["--backend", options.backend]
    if options.precision:
        argv += ["--precision", options.precision]
    if options.dtype != DEFAULT_DTYPE:
        argv += ["--dtype", options.dtype]
    if options.overwrite:
        argv.append("--overwrite")
    if options.retry_failed:
        argv.append("--retry-failed")
    if options.ray is not None:
        argv += ["--ray", options.ray]
        if options.ray_actors is not None:
            argv += ["--ray-actors", str(options.ray_actors)]
        if options.ray_gpus_per_actor is not None:
            argv += ["--ray-gpus-per-actor", f"{options.ray_gpus_per_actor:g}"]
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
