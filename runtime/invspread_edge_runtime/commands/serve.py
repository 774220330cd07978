"""`invedge serve MODEL --index INDEX` (or `--store S --collection C`): an HTTP embedding and search
service (serve/) on a gallery index file or a Milvus collection."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from ..bounds import helped
from ..serve.settings import SERVE_BOUNDS
from ..serve.settings import ServeSettings as Defaults  # stdlib only: --help stays instant
from .options import (
    BackendOpt,
    CollectionOpt,
    CooldownOpt,
    DecoderOpt,
    DurationOpt,
    EndOpt,
    EveryOpt,
    FpsOpt,
    MaxFramesOpt,
    ModelArg,
    OpenTimeoutOpt,
    ReconnectOpt,
    StartOpt,
    StoreOpt,
    ThresholdOpt,
    threads_option,
)

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
                  "prometheus_client": "prometheus-client"}  # fmt: skip


HELP = (
    "Serve embeddings and gallery search over HTTP, with dynamic batching and a web page.\n\n"
    "The gallery: an index file (--index FILE), or a Milvus collection (--store S --collection C), "
    "searched and changed in Milvus itself.\n\n"
    "A Milvus Lite file (--store milvus:FILE) is opened by one process at a time: while it is served, "
    "add and remove items through the server (POST and DELETE /v1/gallery), not with "
    "'invedge index add --store'. A Milvus server (--store milvus://HOST:PORT) is shared by any number "
    "of processes.\n\n"
    "Gallery images (the page's thumbnails, GET /v1/gallery/ID/image) are served only from the "
    "--image-root folders, as regular image files reached without symbolic links: a gallery's "
    "recorded paths are data, not permission to read a file (docs/SERVE_API.md, the threat model)."
)


def image_roots(given: list[str]) -> tuple[Path, ...]:
    """The --image-root folders; an empty one is refused (as a Path it would be the current folder)."""
    if "" in given:
        from ..errors import ConfigError

        raise ConfigError("--image-root is empty", "Give the folder the gallery's images are in")
    return tuple(Path(root) for root in given)


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)


def serve(
    model: str = ModelArg,  # text: a triton:URL model must keep its `//`
    index: Path | None = typer.Option(
        None,
        "--index",
        help="Index file from 'invedge index build' (or --store and --collection).",
        show_default=False,
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    consistency: str | None = typer.Option(
        None,
        "--consistency",
        help="With --store: how fresh searches and counts are: strong (default: every replica's "
        "writes at once, one server time tick per read), session, bounded or eventually (no wait).",
        show_default=False,
    ),
    host: str = typer.Option(
        Defaults.host, "--host", help="Address to listen on (beyond loopback: needs --token-file)."
    ),
    port: int = typer.Option(
        Defaults.port,
        "--port",
        help=helped("Port (0: any free port; the serving line says which).", SERVE_BOUNDS["port"]),
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="File holding the bearer token (one line) every request but /healthz needs "
        "(a browser: log in with it as the password).",
    ),
    image_root: list[str] | None = typer.Option(
        None,
        "--image-root",
        metavar="DIR",
        help="Folder whose image files the gallery may serve (repeatable, at most 16; "
        "none: no gallery images are served).",
        show_default=False,
    ),
    backend: str = BackendOpt,
    precision: str | None = typer.Option(
        None, "--precision", help="Artifact of an export folder: fp32, fp16, int8."
    ),
    max_batch: int = typer.Option(
        Defaults.max_batch,
        "--max-batch",
        help=helped("Batching: most images per backend call.", SERVE_BOUNDS["max_batch"]),
    ),
    max_wait_ms: float = typer.Option(
        Defaults.max_wait_ms,
        "--max-wait-ms",
        help=helped("Batching: longest wait after the first image.", SERVE_BOUNDS["max_wait_ms"]),
    ),
    queue: int = typer.Option(
        Defaults.queue,
        "--queue",
        help=helped(
            "Images waiting at most: past it requests get 503 (busy); more in one request: 413.",
            SERVE_BOUNDS["queue"],
        ),
    ),
    max_upload_mb: float = typer.Option(
        Defaults.max_upload_mb,
        "--max-upload-mb",
        help=helped("Largest request body (413 past it).", SERVE_BOUNDS["max_upload_mb"]),
    ),
    max_pixels: int = typer.Option(
        Defaults.max_pixels,
        "--max-pixels",
        help=helped("Largest image in pixels (413 past it).", SERVE_BOUNDS["max_pixels"]),
    ),
    decode_threads: int = typer.Option(
        Defaults.decode_threads,
        "--decode-threads",
        help=helped("Threads decoding uploaded images.", SERVE_BOUNDS["decode_threads"]),
    ),
    threads: int = threads_option(
        " A model cheaper than its HTTP request serves more images/s with fewer (1 on 2 cores): "
        "the event loop keeps a core."
    ),
    k_max: int = typer.Option(
        Defaults.k_max, "--k-max", help=helped("Largest k a search may ask for.", SERVE_BOUNDS["k_max"])
    ),
    read_timeout: float = typer.Option(
        Defaults.read_timeout_s,
        "--read-timeout",
        help=helped(
            "Seconds a client has to send its whole request body (408 past it).",
            SERVE_BOUNDS["read_timeout_s"],
        ),
    ),
    watch: str | None = typer.Option(
        None,
        "--watch",
        metavar="SOURCE",
        help="Also watch a video file, stream or camera for gallery items, as 'invedge watch' does: "
        "its last matches at GET /v1/watch and on the page.",
        show_default=False,
    ),
    threshold: float = ThresholdOpt,
    cooldown: float = CooldownOpt,
    every: int = EveryOpt,
    fps: float | None = FpsOpt,
    max_frames: int | None = MaxFramesOpt,
    duration: str | None = DurationOpt,
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    open_timeout: float = OpenTimeoutOpt,
    reconnect: int = ReconnectOpt,
    decoder: str = DecoderOpt,
) -> None:
    """Serve embeddings and gallery search over HTTP, with dynamic batching and a web page."""
    from ..errors import MissingDependency
    from ..watch.settings import WatchSettings
    from .options import sampling_from

    if watch is None:
        _refuse_watch_flags_alone(locals())
    for module, package in SERVE_PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(package, "'invedge serve'", "pip install './runtime[serve]'")
    settings = Defaults(
        model=model,
        index=index,
        store=store,
        collection=collection,
        consistency=consistency,
        host=host,
        port=port,
        token_file=token_file,
        backend=backend,
        precision=precision,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue=queue,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        decode_threads=decode_threads,
        threads=threads,
        k_max=k_max,
        read_timeout_s=read_timeout,
        image_roots=image_roots(image_root or []),
        watch=None
        if watch is None
        else WatchSettings(
            watch,
            threshold=threshold,
            cooldown=cooldown,
            sampling=sampling_from(every, fps, max_frames, duration, start, end),
            open_timeout=open_timeout,
            reconnect=reconnect,
            decoder=decoder,
        ),
    )
    settings.check()  # before importing the web stack: a bad flag is one line, at once
    from ..serve.server import run

    run(settings)


WATCH_OPTIONS = {"threshold": ThresholdOpt, "cooldown": CooldownOpt, "every": EveryOpt, "fps": FpsOpt,
                 "max_frames": MaxFramesOpt, "duration": DurationOpt, "start": StartOpt, "end": EndOpt,
                 "open_timeout": OpenTimeoutOpt, "reconnect": ReconnectOpt, "decoder": DecoderOpt}  # fmt: skip


def _refuse_watch_flags_alone(values: dict[str, object]) -> None:
    """A watch flag without --watch would be ignored in silence: one line instead."""
    from ..errors import ConfigError

    given = [name for name, option in WATCH_OPTIONS.items() if values[name] != option.default]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{flags} only apply to a watch", "Add --watch SOURCE, or leave them out")
