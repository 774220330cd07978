"""Options shared by several commands, defined once so the same flag reads the same everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..backends.select import BACKEND_CHOICES, DEFAULT_BACKEND, TRITON_CHOICE
from ..bounds import (
    BATCH,
    COOLDOWN,
    DLA_CORE,
    DURATION,
    END,
    ENGINE_MAX_BATCH,
    ENGINE_MIN_BATCH,
    ENGINE_OPT_BATCH,
    EVERY,
    FPS,
    MAX_FRAMES,
    OPEN_TIMEOUT,
    RECONNECT,
    START,
    THREADS,
    THRESHOLD,
    WORKSPACE_MB,
    helped,
)
from ..embedder import DEFAULT_BATCH_SIZE
from ..tensorrt.cache import DEFAULT_MAX_BATCH, DEFAULT_MIN_BATCH, DEFAULT_WORKSPACE_MB
from ..watch.settings import DEFAULT_COOLDOWN, DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from ..sources.sampling import Sampling

ModelArg = typer.Argument(
    ...,
    help="An exported model (.onnx), an export folder (the runtime picks the artifact for the backend), "
    "or triton:URL: a Triton server's model (http://HOST:PORT[/MODEL] or grpc://HOST:PORT[/MODEL]; "
    "needs the [triton] extra).",
)
BackendOpt = typer.Option(
    DEFAULT_BACKEND,
    "--backend",
    "-b",
    help=f"One of: {', '.join(BACKEND_CHOICES)}, or {TRITON_CHOICE}: a Triton server's model "
    "(http://HOST:PORT[/MODEL] or grpc://HOST:PORT[/MODEL]; needs the [triton] extra; the same as "
    "giving triton:URL as the model).",
)


def threads_option(note: str = "") -> Any:
    """--threads (inference threads, THREADS' range); `note`: what a command adds to its help."""
    return typer.Option(
        0, "--threads", help=helped(f"CPU threads for inference (0: all cores).{note}", THREADS)
    )


ThreadsOpt = threads_option()
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of a table.")
BatchOpt = typer.Option(DEFAULT_BATCH_SIZE, "--batch", help=helped("Images per inference call.", BATCH))
OutDirOpt = typer.Option(..., "--out", "-o", help="Output path.")


@contextlib.contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar for a long step, while the block runs: yields its `on_progress(done, total)`
    (None for a small job, where a bar would only flicker). Fits index/manage.py's `Progress`."""
    from .. import console

    if total <= 2000:
        yield None
        return
    bar = console.progress(transient=True)
    task = bar.add_task(what, total=total)
    bar.start()
    try:
        yield lambda done, _total: bar.update(task, completed=done)
    finally:
        bar.stop()


def existing(path: Path, what: str, hint: str = "Check the path") -> Path:
    from ..errors import InvedgeError

    if not path.exists():
        raise InvedgeError(f"{what} not found: {path}", hint)
    return path


# files an output option (--json, --md, --plot, --grid) must never replace: what the toolkit reads
PRECIOUS_SUFFIXES = (".onnx", ".engine", ".index", ".safetensors", ".npy", ".cache")
PRECIOUS_NAMES = ("manifest.json", "ids.json", "report.json", "run.json", "calibration.json", "metrics.jsonl")


def writable_output(path: Path, option: str) -> None:
    """Raise the one-line error now when `path` (an output file) could not be written later.

    Probes the nearest existing folder with a temporary file (removed at once): permissions,
    a read-only file system and a file standing where a folder is expected all show up here.
    """
    from ..errors import InvedgeError
    from ..files import probe_write

    if path.is_dir():
        raise InvedgeError(f"{option} {path} is a folder", f"Give {option} the path of a file")
    if path.is_file() and (path.suffix.lower() in PRECIOUS_SUFFIXES or path.name in PRECIOUS_NAMES):
        # a report or a picture over a model, an index, a checkpoint (`bench M.onnx --json M.onnx`)
        raise InvedgeError(
            f"{option} {path} is one of the toolkit's files (a model, index, checkpoint or manifest): "
            "writing there would replace it",
            f"Choose a new file for {option}",
        )
    folder = path.absolute().parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        what = "a broken or looping symbolic link" if folder.is_symlink() else "a file, not a folder"
        raise InvedgeError(
            f"cannot write {option} {path}: {folder} is {what}", f"Choose another {option} path"
        )
    try:
        probe_write(folder)
    except OSError as exc:
        raise InvedgeError(
            f"cannot write {option} {path}: {exc.strerror or exc}", f"Choose a writable folder for {option}"
        ) from exc


# TensorRT engine build (build-engine, export --engine): one definition, one meaning.
MinBatchOpt = typer.Option(
    DEFAULT_MIN_BATCH, "--min-batch", help=helped("Engine: smallest batch it accepts.", ENGINE_MIN_BATCH)
)
OptBatchOpt = typer.Option(
    None,
    "--opt-batch",
    help=helped("Engine: batch TensorRT tunes for (default: --max-batch).", ENGINE_OPT_BATCH),
)
MaxBatchOpt = typer.Option(
    DEFAULT_MAX_BATCH, "--max-batch", help=helped("Engine: largest batch it accepts.", ENGINE_MAX_BATCH)
)
WorkspaceOpt = typer.Option(
    DEFAULT_WORKSPACE_MB,
    "--workspace-mb",
    help=helped("Engine: TensorRT workspace limit in MB.", WORKSPACE_MB),
)
DlaOpt = typer.Option(
    None,
    "--dla",
    help=helped(
        "Engine: build for this DLA core of a Jetson, GPU fallback for the rest (fp16/int8 models; "
        "the batch is fixed at --max-batch).",
        DLA_CORE,
    ),
)
# Verbs that load an engine file the user names (--engine): one without its sidecar is refused
# unless this is given, because an engine is code that runs on the GPU (tensorrt.load.load_engine).
TrustEngineOpt = typer.Option(
    False,
    "--trust-engine",
    help="Load an --engine file that has no sidecar (.engine.json). Engines are code run on the GPU: "
    "only for a file you built yourself.",
)

# A gallery in Milvus instead of an index file (index build/add/remove/info, search, serve).
StoreOpt = typer.Option(
    None,
    "--store",
    help="milvus:FILE (Milvus Lite) or milvus://HOST:PORT: a gallery in Milvus instead of an index file",
)
CollectionOpt = typer.Option(
    None, "--collection", help="The Milvus collection holding the gallery (with --store)."
)

# The explore verbs (dedup, cluster, map, select, outliers): what they read, and how neighbours are found.
TargetArg = typer.Argument(
    None,
    metavar="[TARGET]",
    help="An embeddings folder (photos.emb) or a gallery index (photos.index); or --store/--collection.",
    show_default=False,
)
ExactOpt = typer.Option(
    None,
    "--exact/--approximate",
    help="Neighbour search: exact (every pair compared) or approximate (faiss HNSW; may miss a pair). "
    "Default: exact up to 300 000 items (explore.neighbours.EXACT_LIMIT).",
    show_default=False,
)


# Video files, streams and cameras (embed, search, watch, serve --watch): one definition, one meaning.
EveryOpt = typer.Option(1, "--every", help=helped("Video: keep every Nth frame.", EVERY))
FpsOpt = typer.Option(
    None,
    "--fps",
    help=helped("Video: keep this many frames per second of video time.", FPS),
    show_default=False,
)
MaxFramesOpt = typer.Option(
    None, "--max-frames", help=helped("Video: stop after this many kept frames of each source.", MAX_FRAMES)
)
DurationOpt = typer.Option(
    None,
    "--duration",
    help=helped("Video: read this long of each source (90s, 10m, 1h30m, 1:30).", DURATION),
    show_default=False,
)
StartOpt = typer.Option(
    None, "--start", help=helped("Video files: from this time (seconds or 1:30).", START), show_default=False
)
EndOpt = typer.Option(
    None, "--end", help=helped("Video files: up to this time (seconds or 1:30).", END), show_default=False
)
OpenTimeoutOpt = typer.Option(
    10.0,
    "--open-timeout",
    help=helped("Streams and cameras: seconds to wait for them to open.", OPEN_TIMEOUT),
)
ReconnectOpt = typer.Option(
    5, "--reconnect", help=helped("Streams: reconnect tries in a row after a drop or stall.", RECONNECT)
)
DecoderOpt = typer.Option(
    "auto",
    "--decoder",
    help="Video decoder: auto (GStreamer with the hardware decoder on a Jetson, else PyAV), pyav or gstreamer.",
)

# The watch's rules (watch, serve --watch).
ThresholdOpt = typer.Option(
    DEFAULT_THRESHOLD,
    "--threshold",
    help=helped("Watch: the cosine score from which a gallery item is a match.", THRESHOLD),
)
CooldownOpt = typer.Option(
    DEFAULT_COOLDOWN,
    "--cooldown",
    help=helped(
        "Watch: a gallery item that stays in view is reported once, and again only after it has been "
        "out of view (no frame matching it) for this many seconds of frame time.",
        COOLDOWN,
    ),
)


def sampling_from(
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    duration: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Sampling:
    """The `Sampling` the stream options ask for (durations parsed here; ranges checked by it)."""
    from ..sources.sampling import Sampling, parse_duration

    def seconds(text: str | None, flag: str) -> float | None:
        return None if text is None else parse_duration(text, flag)

    return Sampling(
        every=every,
        fps=fps,
        max_frames=max_frames,
        duration=seconds(duration, "--duration"),
        start=seconds(start, "--start"),
        end=seconds(end, "--end"),
    )
