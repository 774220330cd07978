"""`invedge embed MODEL IMAGES --out photos.emb`: embeddings + ids + manifest, resumable.

IMAGES may also be video files, folders holding videos, streams and cameras: each frame the
sampling keeps (--every, --fps, ...) is an item `SOURCE#t=SECONDS`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..bounds import RAY_ACTORS, RAY_GPUS_PER_ACTOR, helped
from ..embeddings.layout import DEFAULT_DTYPE, DTYPES
from .options import (
    BackendOpt,
    BatchOpt,
    DecoderOpt,
    DurationOpt,
    EndOpt,
    EveryOpt,
    FpsOpt,
    JsonOpt,
    MaxFramesOpt,
    ModelArg,
    OpenTimeoutOpt,
    ReconnectOpt,
    StartOpt,
    ThreadsOpt,
    sampling_from,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..embedder import ImageSources
    from ..embeddings.corpus import EmbedOptions, EmbedResult
    from ..embeddings.videos import FrameEvents
    from ..sources.open import StreamSettings


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)


def embed(
    model: str = ModelArg,  # text: a triton:URL model must keep its `//`
    images: list[str] = typer.Argument(
        ...,
        help="Image and video files, folders of them (searched recursively), streams (rtsp://, "
        "http(s)://, rtp://) and cameras (v4l2:///dev/video0, csi://0, gst:PIPELINE).",
        show_default=False,
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
    every: int = EveryOpt,
    fps: float | None = FpsOpt,
    max_frames: int | None = MaxFramesOpt,
    duration: str | None = DurationOpt,
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    open_timeout: float = OpenTimeoutOpt,
    reconnect: int = ReconnectOpt,
    decoder: str = DecoderOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Embed images and video frames into an embeddings folder; run it again to resume after an interruption.

    A stream or camera runs until --duration, --max-frames or Ctrl-C (a normal end: exit 0).
    """
    from .. import console
    from ..embeddings.corpus import EmbedOptions
    from ..sources.open import StreamSettings

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
        streams=StreamSettings(
            sampling_from(every, fps, max_frames, duration, start, end),
            open_timeout=open_timeout,
            reconnect=reconnect,
            decoder=decoder,
        ),
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

    bar, task, videos = console.progress(), None, False

    def started(embedder, found) -> None:  # embedder: a RayPlan with --ray
        nonlocal task, videos
        videos = bool(found.videos)
        if options.ray is None:
            report_backend(embedder)
            what = f"{embedder.info.name} ({Path(embedder.info.model_path).name})"
        else:
            console.info(f"Ray: {embedder.describe()}")
            what = f"{embedder.model_path.name} on Ray"
        if (note := found.note()) is not None:
            console.warn(note)
        where = f" from {found.root}" if found.paths else ""
        console.info(f"embedding {inputs_read(found)}{where} with {what}")
        bar.start()
        if found.paths or not found.videos:
            task = bar.add_task("embed", total=len(found.paths))

    def advance(done: int, total: int) -> None:
        if task is not None:
            bar.update(task, completed=done)

    try:
        return embed_images(
            options, on_start=started, on_progress=advance, events=_frame_events(bar, options)
        )
    except EmbeddingInterrupted as exc:
        kept = f"{exc.saved:,} of {exc.total:,} images are embedded and saved in {exc.work / 'parts'}"
        if videos:  # the frames' total is not known in advance
            kept = f"{exc.saved:,} items (images and video frames) are embedded and saved in {exc.work / 'parts'}"
        if options.overwrite and exc.work != exc.out:
            kept += f" ({options.out} is unchanged until the new embeddings are complete)"
        raise Interrupted(f"stopped by Ctrl-C; {kept}", resume_hint(options, "Resume with")) from exc
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"stopped by Ctrl-C before any image was embedded; {options.out} is unchanged",
            resume_hint(options, "Run again with"),
        ) from exc
    finally:
        bar.stop()


def _frame_events(bar: Progress, options: EmbedOptions) -> FrameEvents:
    """A line per source opened (what decodes it), a bar per file (its total when the container
    says how many frames it holds), a counter per live source, and a line per drop or damage."""
    from rich.markup import escape

    from .. import console
    from ..embeddings.videos import FrameEvents

    tasks: dict[int, object] = {}

    def opened(source, video) -> None:
        console.info(f"reading {escape(source.describe())}")
        total = (
            None if source.live else options.streams.sampling.expected(source.frame_count, source.frame_rate)
        )
        tasks[id(source)] = bar.add_task(_short(source.name), total=total)

    def taken(source, count: int) -> None:
        if (task := tasks.get(id(source))) is not None:
            bar.update(task, completed=count)

    def event(line: str) -> None:
        console.warn(escape(line))

    return FrameEvents(on_open=opened, on_frames=taken, on_event=event)


def inputs_read(found: ImageSources) -> str:
    """'60 images', '1 video source', '60 images and 2 video sources': what a run was given."""
    counted = [(len(found.paths), "image"), (len(found.videos), "video source")]
    parts = [f"{n:,} {what}{'s' * (n != 1)}" for n, what in counted if n]
    return " and ".join(parts) or "0 images"


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


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
    items = "items" if "sources" in manifest else "images"  # frames were embedded too
    if manifest["failed_count"]:
        first = manifest["failed"][0]
        n = manifest["failed_count"]
        retry = resume_hint(replace(options, overwrite=False, retry_failed=True), "")
        console.warn(
            f"{n} unreadable {items if n != 1 else items[:-1]} skipped (first: {first['reason']}). "
            f"Fix or replace {'them' if n != 1 else 'it'}, then add {'them' if n != 1 else 'it'} with{retry}"
        )
    if manifest["resumed"]:
        what = "kept from the finished folder" if options.extends else "were already done"
        console.info(f"resumed: {manifest['resumed']:,} {items} {what}")
    if options.retry_failed and manifest["resumed"] == manifest["count"] and not manifest["failed_count"]:
        console.info(f"nothing to retry: every {items[:-1]} given is already in {out}")
    console.success(
        f"{manifest['count']:,} embeddings ({manifest['dim']}-d {options.dtype}) → {out} ({human_size(size)}) "
        f"in {seconds:.1f} s ({rate:,.0f} {'img' if items == 'images' else 'items'}/s with {result.backend.name}{' on Ray' * (options.ray is not None)})"
    )
    named = out if out.name not in ("", "..") else out.absolute().resolve()  # --out . has no name to reuse
    console.info(f"next: invedge index build {out} --out {named.with_suffix('.index')}")


def resume_hint(options: EmbedOptions, lead: str) -> str:
    """`lead`, then the command that continues this run, saying when a password was left out of it."""
    from ..backends.triton import shown

    given = [*options.images, options.model, options.backend]
    hidden = any(shown(str(i)) != str(i) for i in given)
    note = " (the password was left out; add it back)" * hidden
    return f"{lead}{note}: {resume_command(options)}"


def resume_command(options: EmbedOptions) -> str:
    """The `invedge embed` command line that continues this run (what matters for resuming); a
    URL's password is left out (the line is printed)."""
    import shlex

    from ..backends.triton import shown

    argv = [
        "invedge",
        "embed",
        shown(str(options.model)),
        *(shown(str(i)) for i in options.images),
        "--out",
        str(options.out),
    ]
    if options.backend != "auto":
        argv += ["--backend", shown(options.backend)]
    if options.precision:
        argv += ["--precision", options.precision]
    if options.dtype != DEFAULT_DTYPE:
        argv += ["--dtype", options.dtype]
    if options.overwrite:
        argv.append("--overwrite")
    if options.retry_failed:
        argv.append("--retry-failed")
    argv += stream_flags(options.streams)
    if options.ray is not None:
        argv += ["--ray", options.ray]
        if options.ray_actors is not None:
            argv += ["--ray-actors", str(options.ray_actors)]
        if options.ray_gpus_per_actor is not None:
            argv += ["--ray-gpus-per-actor", f"{options.ray_gpus_per_actor:g}"]
    return shlex.join(argv)


def stream_flags(streams: StreamSettings) -> list[str]:
    """The stream options that differ from their defaults, as command-line words."""
    sampling, default, words = streams.sampling, type(streams)(), []
    for flag, value in (
        ("--every", None if sampling.every == 1 else sampling.every),
        ("--fps", sampling.fps),
        ("--max-frames", sampling.max_frames),
        ("--duration", sampling.duration),
        ("--start", sampling.start),
        ("--end", sampling.end),
        ("--open-timeout", None if streams.open_timeout == default.open_timeout else streams.open_timeout),
        ("--reconnect", None if streams.reconnect == default.reconnect else streams.reconnect),
        ("--decoder", None if streams.decoder == default.decoder else streams.decoder),
    ):
        if value is not None:
            exact = isinstance(value, float) and not value.is_integer()
            words += [
                flag,
                repr(value) if exact else str(int(value)) if isinstance(value, float) else str(value),
            ]
    return words


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
