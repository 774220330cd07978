"""Video files, streams and cameras in an embed: found beside the images, each kept frame an item.

`find_inputs` expands what a user named (image and video files, folders of both, stream URLs,
cameras) into the images, each once, and the video sources in order; `embed_sources` embeds the
frames each source's sampling keeps into the run's `EmbeddingWriter`, after the images. A frame's id
is `SOURCE#t=SECONDS` (`sources.frame.Frame.item_id`): SOURCE is a file's path relative to the
images' root, as an image's id is, or a stream's name (its URL without the password).

Resuming: a file read to its end (`parts.read_to_end`: an HLS playlist that ended too; a remote
file's damage is not an end) is named in the part saved when it ended, with its record for the
manifest, and a resumed run (or one that extends a finished folder) does not open it again. A
file cut short is decoded again from its start (seeking is not exact in every container, and the
sampler must see every frame to keep what an uninterrupted run keeps), but its frames already
saved are neither converted nor embedded again. A live source is saved as a part every
`LIVE_FLUSH_S` seconds, so a kill loses at most that much; its next run appends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import hooks
from ..errors import ConfigError, DataError, SourceError
from ..sources.open import StreamSettings
from ..sources.spec import VideoInput, as_input, is_location
from .parts import read_to_end

if TYPE_CHECKING:
    from ..embedder import Embedder, ImageSources
    from ..sources.frame import Frame, FrameSource
    from ..sources.spec import SourceSpec
    from .writer import EmbeddingWriter

LIVE_FLUSH_S = 10.0  # a live source's frames are saved as a part at least this often


def find_inputs(sources: Sequence[str | os.PathLike[str]]) -> ImageSources:
    """The images (each once, `embedder.find_images`'s rules) and the video sources (`videos`, in
    the order given, a folder's sorted, live sources after the files: a camera runs until it is
    stopped) that `sources` name; the root covers every file given."""
    from ..embedder import find_images
    from ..preprocess import IMAGE_SUFFIXES
    from ..sources.spec import VIDEO_SUFFIXES, parse_source

    if not sources:
        raise DataError("no images given", "Pass image files or folders")
    image_inputs: list[Path] = []
    videos: list[tuple[SourceSpec, Path | None]] = []  # (spec, absolute path of a file)
    folders: list[Path] = []
    for text in map(str, sources):
        text = str(as_input(text))  # file:// as its path
        if not is_location(text) and not Path(text).exists():
            raise DataError(f"not found: {Path(text).absolute()}", "Check the path of the images")
        if not is_location(text) and Path(text).is_dir():
            folder = Path(text).absolute()
            folders.append(folder)
            suffixes = [(p, p.suffix.lower()) for p in folder.rglob("*")]
            listed = sorted(p for p, suffix in suffixes if suffix in VIDEO_SUFFIXES and p.is_file())
            videos.extend((parse_source(str(p)), p) for p in listed)
            if not listed or any(suffix in IMAGE_SUFFIXES for _, suffix in suffixes):
                image_inputs.append(folder)  # neither images nor videos: find_images says so
            continue
        spec = parse_source(text)
        if spec.kind == "image":
            image_inputs.append(Path(text))
            folders.append(Path(text).absolute().parent)
        elif spec.kind == "video" and not is_location(spec.target):  # not a video on a web server
            path = Path(spec.target).absolute()
            videos.append((spec, path))
            folders.append(path.parent)
        else:
            videos.append((spec, None))
    found = find_images(image_inputs) if image_inputs else None
    # no file given (streams, cameras): ids are not relative to anything, and the root must not
    # change with the working folder, or a later run could not append to the folder
    root = Path(os.path.commonpath([str(f) for f in folders])) if folders else Path(Path.cwd().anchor)
    inputs = _unique_videos(videos, root)
    if found is None:
        from ..embedder import ImageSources

        return ImageSources([], root, [], inputs)
    found.root, found.videos = root, inputs
    return found


def _unique_videos(videos: list[tuple[SourceSpec, Path | None]], root: Path) -> list[VideoInput]:
    """Each source once (a file named and inside a named folder is read once), named for its ids."""
    seen: set[str] = set()
    inputs = []
    for spec, path in videos:
        key = str(path.resolve()) if path is not None else spec.target
        if key in seen:
            continue
        seen.add(key)
        name = path.relative_to(root).as_posix() if path is not None else spec.name
        inputs.append(VideoInput(spec, name))
    return sorted(inputs, key=lambda video: video.live)  # a live source ends last: files come first


def check_sources(videos: Sequence[VideoInput], settings: StreamSettings) -> None:
    """What `open_source` would refuse of these sources, refused before any work: a decoder that
    cannot read one, --start/--end on a live one, PyAV missing where it decodes."""
    from ..sources.open import choose_decoder

    live = [video for video in videos if video.live]
    if live and settings.sampling.windowed:
        raise ConfigError(
            f"--start and --end apply to video files; {live[0].name} is live",
            "Use --duration for a live source",
        )
    unbounded = settings.sampling.max_frames is None and settings.sampling.duration is None
    if len(live) > 1 and unbounded:
        raise ConfigError(
            f"{len(live)} live sources given ({live[0].name}, {live[1].name}); the first would run until "
            "Ctrl-C and the others never start",
            "Bound them with --duration or --max-frames, or embed each live source in its own run",
        )
    decoders = {choose_decoder(video.spec, settings.decoder) for video in videos}
    if "pyav" in decoders:
        from ..sources.pyav import import_av

        import_av()


@dataclass
class FrameEvents:
    """What `embed_sources` tells its caller while it runs (each optional)."""

    on_open: Callable[[FrameSource, VideoInput], None] | None = None  # a source opened
    on_frames: Callable[[FrameSource, int], None] | None = None  # frames of it taken so far
    on_event: Callable[[str], None] | None = None  # one line: a drop, reconnect, damage, a failure


@dataclass
class _Run:
    """One source's figures for the manifest."""

    embedded: int = 0  # by this run
    saved: int = 0  # kept frames of a file saved by an earlier run (counted by the reader's thread)


def embed_sources(
    writer: EmbeddingWriter,
    embedder: Embedder,
    videos: Sequence[VideoInput],
    settings: StreamSettings,
    events: FrameEvents | None = None,
    batch_size: int | None = None,
    lost: list[str] | None = None,
) -> dict[str, Any]:
    """Embed the kept frames of each source into `writer` (after the images); returns the
    manifest's fields: "sampling" and "sources" (per source: kind, decoder, what it kept,
    dropped, reconnected, any damage or error).

    A file that cannot be opened or read is a failure (listed, the run goes on); a live source
    that cannot be opened raises SourceError once what came before is saved. A live source whose
    reconnects are used up ends there: its error is recorded and its line appended to `lost`, for
    the caller to raise once the folder is finished (so it is readable and a rerun appends).
    Ctrl-C while the last source is live ends it normally (a camera runs until then); elsewhere
    it is raised, after a flush, for the caller to save and name the resume command.
    """
    events = events or FrameEvents()
    base = writer.base.manifest.get("sources") if writer.base is not None else None
    sources: dict[str, dict[str, Any]] = dict(base) if isinstance(base, dict) else {}
    sources |= writer.finished  # read to their end by an earlier run: not opened again
    # the ids saved before this run, asked by each source's reader thread (a snapshot: this
    # thread adds this run's ids to `seen`, which drops a repeated timestamp)
    resumed = frozenset(writer.done_ids)
    seen = set(resumed)
    for position, video in enumerate(videos):
        if video.name in writer.finished:  # a file, or a finished HLS playlist read as one
            continue
        last = position == len(videos) - 1
        record = _embed_one(writer, embedder, video, settings, events, resumed, seen, last, batch_size)
        sources[video.name] = _merged(sources.get(video.name), record)
        if record.get("lost") and lost is not None:
            lost.append(record["error"])
        if record.get("interrupted"):
            break
    return {"sampling": settings.sampling.to_dict(), "sources": sources}


def _embed_one(
    writer: EmbeddingWriter,
    embedder: Embedder,
    video: VideoInput,
    settings: StreamSettings,
    events: FrameEvents,
    resumed: frozenset[str],
    seen: set[str],
    last: bool,
    batch_size: int | None,
) -> dict[str, Any]:
    """One source into `writer`; `resumed`: the ids saved before this run, `seen`: those taken
    so far (see embed_sources)."""
    from ..sources.frame import frame_id

    run, ending = _Run(), {}

    def done(time_s: float) -> bool:
        """The kept frame at `time_s` is saved already (asked once per kept frame of a file)."""
        saved = frame_id(video.name, time_s) in resumed
        run.saved += saved
        return saved

    try:
        source = settings.open(video.spec, name=video.name, on_event=events.on_event, done=done)
    except (SourceError, DataError) as exc:
        if video.live:
            writer.flush()  # what came before is kept: the same command resumes
            raise
        return {"kind": video.spec.kind, "live": False, **_lost(writer, video, exc, events)}
    with source:
        if events.on_open is not None:
            events.on_open(source, video)
        try:
            _embed_frames(writer, embedder, source, events, seen, run, batch_size)
        except KeyboardInterrupt:
            writer.flush()
            if not (source.live and last):
                raise
            ending = {"interrupted": True}  # a camera runs until Ctrl-C: a normal end
        except SourceError as exc:  # the frames before the loss are kept
            writer.flush()
            ending = _lost(writer, video, exc, events)
    record = {
        "kind": video.spec.kind,
        "live": source.live,
        "decoder": source.decoder,
        **source.stats.to_dict(),
        "embedded": run.embedded + run.saved,  # a resumed file's as an uninterrupted run's
        **ending,
    }
    if read_to_end(video.name, record):  # never opened again
        writer.finish_source(video.name, record)
    writer.flush()  # a finished source is one part boundary: a later kill keeps it
    return record


def _lost(
    writer: EmbeddingWriter, video: VideoInput, exc: SourceError, events: FrameEvents
) -> dict[str, Any]:
    """A source that failed: a stream's end while read (the caller raises once the folder is
    finished), a file that could not be opened or read (listed as failed; the run goes on)."""
    if video.live:
        return {"error": exc.message, "lost": True}
    writer.add_failure(video.name, exc.message)
    if events.on_event is not None:
        events.on_event(f"skipped: {exc.message}")
    return {"error": exc.message}


def _embed_frames(
    writer: EmbeddingWriter,
    embedder: Embedder,
    source: FrameSource,
    events: FrameEvents,
    seen: set[str],
    run: _Run,
    batch_size: int | None,
) -> None:
    from ..sources.frame import frame_info

    def fresh() -> Iterator[Frame]:
        """The kept frames not saved already (a resumed run's, or a repeated timestamp); a file's
        frames saved before are counted by the source and never reach here."""
        for frame in source.frames():
            if frame.item_id in seen:
                if events.on_frames is not None:
                    events.on_frames(source, source.stats.kept)
                continue
            seen.add(frame.item_id)
            yield frame

    flushed = time.monotonic()
    for frames, vectors in embedder.embed_frames(fresh(), batch_size=1 if source.live else batch_size):
        ids = [frame.item_id for frame in frames]
        writer.add(ids, vectors, {item: frame_info(frame) for item, frame in zip(ids, frames, strict=True)})
        run.embedded += len(frames)
        if events.on_frames is not None:
            events.on_frames(source, source.stats.kept)
        if source.live and time.monotonic() - flushed >= LIVE_FLUSH_S:
            writer.flush()
            flushed = time.monotonic()
        hooks.reached("embed-batch")


def _merged(before: Any, now: dict[str, Any]) -> dict[str, Any]:
    """A source's record; a live source appended to a finished folder adds to its figures."""
    now = {key: value for key, value in now.items() if key not in ("interrupted", "lost")}
    if not (isinstance(before, dict) and now.get("live") and before.get("live")):
        return now
    summed = {
        key: before[key] + now[key]
        for key in ("decoded", "kept", "dropped", "reconnects", "embedded")
        if isinstance(before.get(key), int) and isinstance(now.get(key), int)
    }
    return now | summed
