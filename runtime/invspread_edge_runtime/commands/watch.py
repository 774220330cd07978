"""`invedge watch MODEL SOURCE --index INDEX`: search a video file, stream or camera against a
gallery as its frames come, one line (or JSON line) per match."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..bounds import WATCH_K, helped
from ..watch.settings import DEFAULT_WATCH_K
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
    ThreadsOpt,
    ThresholdOpt,
)

if TYPE_CHECKING:
    from ..watch.matcher import Match

HELP = (
    "Watch a video file, stream or camera for gallery items: a line per match.\n\n"
    "Each kept frame is embedded and searched against the gallery; a gallery item whose score is at "
    "least --threshold is a match. Debounced per gallery item: an item that stays in view is reported "
    "once, and again only after it has been out of view for --cooldown seconds of frame time.\n\n"
    "Sources: a video file, rtsp://, rtsps://, http(s)://, rtp://, v4l2:///dev/videoN (or /dev/videoN), "
    "csi://N (a Jetson CSI camera), gst:PIPELINE (ending in appsink). A live source keeps only its "
    "newest frame while the model is busy (the dropped frames are counted). Stops at the end of a "
    "file, after --duration or --max-frames, or on Ctrl-C (exit 0, with the summary line); a stream "
    "lost for good ends it with exit 1 after the summary line.\n\n"
    "--json: one line per match with id, score, rank, source, frame, time (seconds: of the file, or "
    "Unix time for a live source), at, live, latency_ms (from the frame's arrival), path, saved."
)


def register(app: typer.Typer) -> None:
    app.command("watch", help=HELP)(watch)


def watch(
    model: str = ModelArg,  # text: a triton:URL model must keep its `//`
    source: str = typer.Argument(
        ..., help="A video file, stream URL, camera (v4l2:///dev/video0, csi://0) or gst:PIPELINE."
    ),
    index: Path | None = typer.Option(
        None, "--index", help="Index file from 'invedge index build' (or --store and --collection)."
    ),
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    threshold: float = ThresholdOpt,
    cooldown: float = CooldownOpt,
    k: int = typer.Option(
        DEFAULT_WATCH_K,
        "--k",
        "-k",
        help=helped("Gallery items reported per frame (the best first).", WATCH_K),
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON line per match on stdout."),
    save_matches: Path | None = typer.Option(
        None, "--save-matches", metavar="DIR", help="Write each matched frame into DIR as a PNG."
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
    backend: str = BackendOpt,
    threads: int = ThreadsOpt,
) -> None:
    """Watch a video file, stream or camera for gallery items."""
    from rich.markup import escape

    from .. import console
    from ..backends.triton import as_model
    from ..watch.run import WatchOptions, run_watch
    from ..watch.settings import WatchSettings
    from .options import sampling_from

    settings = WatchSettings(
        source,
        threshold=threshold,
        cooldown=cooldown,
        k=k,
        sampling=sampling_from(every, fps, max_frames, duration, start, end),
        open_timeout=open_timeout,
        reconnect=reconnect,
        decoder=decoder,
    )
    options = WatchOptions(
        as_model(model),
        settings,
        index=index,
        store=store,
        collection=collection,
        save_matches=save_matches,
        backend=backend,
        threads=threads,
    )
    watched = run_watch(
        options,
        on_start=lambda started: console.info(escape(started.line())),
        on_match=_print_json if json_out else _print_line,
        on_event=lambda line: console.warn(escape(line)),
    )
    console.info(watched.stats.summary() + (" (stopped by Ctrl-C)" if watched.interrupted else ""))
    if watched.error is not None:  # a stream that failed mid-watch: the matches above stand
        raise watched.error


def _print_json(match: Match) -> None:
    import json

    from .. import console

    console.out.file.write(json.dumps(match.to_dict()) + "\n")
    console.out.file.flush()


def _print_line(match: Match) -> None:
    from rich.markup import escape

    from .. import console

    record = match.to_dict()
    saved = f"  → {record['saved']}" if record["saved"] else ""
    console.out.print(
        f"{escape(record['at'])}  frame {record['frame']}  {escape(record['id'])}  "
        f"{record['score']:.4f}  ({record['latency_ms']:.0f} ms){escape(saved)}",
        highlight=False,
    )
    console.out.file.flush()
