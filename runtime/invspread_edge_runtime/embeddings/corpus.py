"""The corpus-embedding job: images → an embeddings folder, resumable, under the folder's lock.

What every embed shares, whichever loop turns images into vectors: its options (`EmbedOptions`)
and result (`EmbedResult`), the claim of the output folder (`claimed_output`) and the writing
around the loop (`write_embeddings`); and the loop in this process (`embed_in_process`). The loop
on a Ray cluster is ray_embed.py's; job.py chooses between the two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import hooks
from ..bounds import BATCH, RAY_ACTORS, RAY_GPUS_PER_ACTOR, THREADS, check_bounds
from ..errors import ConfigError, EmbeddingsError, InvedgeError, NonFiniteError, SourceError
from ..files import sha256_file
from ..sources.open import StreamSettings, model_threads
from ..sources.spec import as_input
from .folder import check_output, recover
from .layout import DEFAULT_DTYPE, DTYPES, PART_SIZE, PARTS
from .parts import SERVED_MODEL
from .videos import FrameEvents, check_sources, embed_sources, find_inputs
from .writer import EmbeddingWriter

# More items written after the images, into the same writer (video frames: videos.embed_sources);
# returns fields for the manifest.
AfterImages = Callable[[EmbeddingWriter], dict[str, Any]]


class EmbeddingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `embed_to_folder`, after the embedded images were saved as parts."""

    def __init__(self, out: Path, work: Path, saved: int, total: int) -> None:
        super().__init__(f"{saved} of {total} images saved in {work / PARTS}")
        self.out, self.work, self.saved, self.total = out, work, saved, total


def iter_new(paths: Iterable[Path], root: Path, done: set[str]) -> list[tuple[str, Path]]:
    """(id, path) for the paths not already in `done`; ids are POSIX paths relative to `root`."""
    pending = []
    for path in paths:
        item = relative_id(path, root)
        if item not in done:
            pending.append((item, path))
    return pending


def relative_id(path: Path, root: Path) -> str:
    """`path` relative to `root` (lexically when it can: no file-system calls), else absolute."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        pass
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


@dataclass
class LoopBatch:
    """One batch from an embedding loop: vectors for `ids` (in order), and the ids that could not
    be read, each with its reason ("unreadable image PATH: why")."""

    ids: list[str]
    vectors: np.ndarray  # (len(ids), d) float32, L2-normalised
    failures: list[tuple[str, str]] = field(default_factory=list)


# The one part that differs between a single process and a Ray cluster: pending (id, path) pairs
# in, batches out (in the pending order, so that ids.json is the same whichever loop ran).
EmbedLoop = Callable[[list[tuple[str, Path]]], Iterable[LoopBatch]]


def embedder_loop(embedder: Any) -> EmbedLoop:
    """The single-process loop: `embedder.embed_batches` (decoding a few batches ahead in threads)."""

    def loop(pending: list[tuple[str, Path]]) -> Iterator[LoopBatch]:
        for batch in embedder.embed_batches([p for _, p in pending]):
            yield LoopBatch(
                [pending[i][0] for i in batch.positions],
                batch.vectors,
                [(pending[i][0], reason) for i, reason in batch.failures],
            )

    return loop


def embed_to_folder(
    embedder: Any,
    paths: list[Path],
    root: Path,
    out: str | os.PathLike[str],
    dtype: str = DEFAULT_DTYPE,
    overwrite: bool = False,
    on_progress: Any = None,
    part_size: int = PART_SIZE,
    retry_failed: bool = False,
    lock: bool = True,
    after: AfterImages | None = None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed `paths` with an `embed.Embedder` into an embeddings folder; resumes an unfinished one.

    Holds the lock of `out` throughout (a second writer waits, then sees the finished folder);
    `lock=False` when the caller holds it already (as `invedge embed` does, to check `out` before
    it opens the model).
    `on_progress(done, total)` is called after each batch (`done` counts resumed images too).
    Unreadable images are skipped and listed in the manifest; a rerun of an unfinished folder, or
    `retry_failed` on a finished one, tries them again. Ctrl-C raises `EmbeddingInterrupted`
    after saving what was embedded. `after` and `sampling`: see `write_embeddings`. Returns the manifest.
    """
    return write_embeddings(
        embedder_loop(embedder),
        embedder.meta,
        embedder.info.model_path,
        paths,
        root,
        out,
        backend=lambda: embedder.info.name,
        served=embedder.info.name == "triton",
        dtype=dtype,
        overwrite=overwrite,
        on_progress=on_progress,
        part_size=part_size,
        retry_failed=retry_failed,
        lock=lock,
        after=after,
        sampling=sampling,
    )


def write_embeddings(
    loop: EmbedLoop,
    meta: Any,
    model_path: str | os.PathLike[str],
    paths: list[Path],
    root: Path,
    out: str | os.PathLike[str],
    *,
    backend: Callable[[], str],
    dtype: str = DEFAULT_DTYPE,
    overwrite: bool = False,
    on_progress: Any = None,
    part_size: int = PART_SIZE,
    retry_failed: bool = False,
    lock: bool = True,
    extra: dict[str, Any] | None = None,
    after: AfterImages | None = None,
    sampling: dict[str, Any] | None = None,
    served: bool = False,
) -> dict[str, Any]:
    """`embed_to_folder` with any embedding `loop` (one process, or Ray workers: ray_embed.py).

    Everything around the loop is this function's, whichever loop runs: the writer (parts,
    resume, overwrite, retry_failed), progress, Ctrl-C, and the manifest. `meta` is the model's
    `ModelMeta` and `model_path` the ONNX file the loop runs; `backend()` names the backend that
    ran, asked once the loop is done. Each pending image is taken once (a batch repeated by a
    retried worker is dropped), and one that never came back fails the run after what came back
    is saved: the same command resumes. `after(writer)` writes more items once the images are
    done (video frames) and returns fields for the manifest; `sampling` (`Sampling.selection()`)
    is which frames it keeps of the videos, part of the run's resume state. `served`: a Triton
    server runs the model and `model_path` is its URL (`model_identity`).
    """
    from ..locks import exclusive_lock

    model_path, model_sha = model_identity(model_path, meta, served)
    with exclusive_lock(out, "embeddings folder") if lock else contextlib.nullcontext():
        writer = EmbeddingWriter(
            out,
            space={
                "space_id": meta.space_id,
                "checkpoint_sha256": meta.checkpoint_sha256,
                "embedding_dim": meta.embedding_dim,
            },
            model={
                "path": str(model_path),
                "sha256": model_sha,
                "precision": meta.precision,
                "arch": meta.arch,
                "image_size": meta.image_size,
            },
            root=root,
            dtype=dtype,
            part_size=part_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
            sampling=sampling,
        )
        pending = iter_new(paths, Path(writer.root), writer.done_ids)
        total = len(paths)
        if writer.base is not None and not pending and not writer.base.failed and after is None:
            shutil.rmtree(writer.work, ignore_errors=True)  # --retry-failed with nothing to retry
            return writer.base.manifest | {"resumed": len(writer.base), "seconds": 0.0}
        done = total - len(pending)
        resumed = writer.count
        started = time.perf_counter()
        if on_progress is not None:
            on_progress(done, total)
        try:
            expected, seen = {item for item, _ in pending}, set()
            for batch in loop(pending):
                done += _take(writer, batch, expected, seen)
                if on_progress is not None:
                    on_progress(done, total)
                hooks.reached("embed-batch")
            if len(seen) != len(expected):
                writer.flush()  # keep what came back: the rerun embeds only the missing ones
                missing = next(item for item, _ in pending if item not in seen)
                raise EmbeddingsError(
                    f"{len(expected) - len(seen)} of {len(expected)} images never came back from the "
                    f"embedding workers (first: {missing}); the {writer.count:,} embedded are saved",
                    "Run the same command again: it resumes and embeds only the missing images",
                )
            more = after(writer) if after is not None else _video_fields(writer)
            seconds = time.perf_counter() - started
            return writer.finish(
                {
                    "backend": backend(),
                    "resumed": resumed,
                    "seconds": round(seconds, 3),
                    **(extra or {}),
                    **more,
                }
            )
        except NonFiniteError:  # the model gives NaN or inf: not one such row is written
            writer.discard()
            raise
        except InvedgeError:  # a source lost, a worker's failure: what was embedded is kept
            writer.flush()
            raise
        except KeyboardInterrupt as exc:  # in the loop or the join
            writer.flush()  # Ctrl-C: keep what was embedded, the next run resumes after it
            raise EmbeddingInterrupted(Path(out), writer.work, writer.count, total) from exc


def _video_fields(writer: EmbeddingWriter) -> dict[str, Any]:
    """The manifest's video fields of a run without videos: those of the folder it extends."""
    base = writer.base.manifest if writer.base is not None else {}
    return {key: base[key] for key in ("sampling", "sources") if key in base}


def _take(writer: EmbeddingWriter, batch: LoopBatch, expected: set[str], seen: set[str]) -> int:
    """Write the batch's pending images not taken yet, once each; returns how many were new."""
    keep = [k for k, item in enumerate(batch.ids) if item in expected and item not in seen]
    ids = [batch.ids[k] for k in keep]
    seen.update(ids)
    if ids:
        vectors = batch.vectors if len(keep) == len(batch.ids) else np.asarray(batch.vectors)[keep]
        writer.add(ids, vectors)
    failed = 0
    for item, reason in batch.failures:
        if item in expected and item not in seen:
            seen.add(item)
            writer.add_failure(item, reason)
            failed += 1
    return len(ids) + failed


@dataclass(frozen=True)
class EmbedOptions:
    """What one `invedge embed` is asked to do. A value the command refuses raises its one-line
    ConfigError when the options are made, before any image is read or a model opened.

    `batch`: images per inference call (None: the embedder's default). `ray`: run the embedding
    loop on a Ray cluster ("auto" or an address: see ray_embed.py), sized by `ray_actors` and
    `ray_gpus_per_actor`. `out` is kept as the writer needs it (`embeddings_out`). `images` may
    name video files, folders of them, streams and cameras too, read as `streams` says.
    """

    model: Path | str  # a file or export folder, or `triton:URL` (text: backends/triton.py `as_model`)
    images: Sequence[Path | str]  # files and folders (Paths), stream URLs and cameras (str), as a tuple
    out: Path
    backend: str = "auto"
    batch: int | None = None
    threads: int = 0
    precision: str | None = None
    dtype: str = DEFAULT_DTYPE
    overwrite: bool = False
    retry_failed: bool = False
    ray: str | None = None
    ray_actors: int | None = None
    ray_gpus_per_actor: float | None = None
    streams: StreamSettings = field(default_factory=StreamSettings)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"Invalid --dtype {self.dtype!r}. Only {', '.join(DTYPES)} are supported")
        check_bounds({"batch": BATCH, "threads": THREADS}, vars(self))
        if self.overwrite and self.retry_failed:
            raise ConfigError(
                "--overwrite and --retry-failed contradict each other",
                "Pass --overwrite to embed everything again, or --retry-failed to keep what is done",
            )
        if self.ray is None and (self.ray_actors is not None or self.ray_gpus_per_actor is not None):
            raise ConfigError(
                "--ray-actors and --ray-gpus-per-actor size a Ray run",
                "Add --ray auto (or a cluster's address)",
            )
        if self.ray is not None:
            self._check_ray()
        from ..backends.triton import as_model

        object.__setattr__(self, "model", as_model(self.model))
        object.__setattr__(self, "images", tuple(as_input(image) for image in self.images))
        object.__setattr__(self, "out", embeddings_out(self.out))

    @property
    def appends(self) -> bool:
        """A live source adds its new frames to a finished folder (as --retry-failed extends one)."""
        from ..sources.spec import parse_source

        live = any(isinstance(i, str) and parse_source(i).live for i in self.images)
        return live and not self.overwrite

    @property
    def extends(self) -> bool:
        """This run may add to a finished folder: --retry-failed, or a live source's append."""
        return self.retry_failed or self.appends

    def _check_ray(self) -> None:
        """The refusals of a Ray run that need no Ray (the backend's words are the embedder's)."""
        from ..backends.select import BACKEND_CHOICES
        from ..backends.triton import is_triton, shown

        if not self.ray or not self.ray.strip():
            raise ConfigError(
                "Invalid --ray ''", "Pass --ray auto, or the address of a Ray cluster (HOST:6379)"
            )
        # a fraction of a GPU shares it between actors
        check_bounds({"ray_actors": RAY_ACTORS, "ray_gpus_per_actor": RAY_GPUS_PER_ACTOR}, vars(self))
        if is_triton(self.model) or is_triton(self.backend):
            raise ConfigError(
                "Triton is not available with --ray: Ray's actors run the model themselves",
                "Leave --ray out to embed through the Triton server, or give a local export",
            )
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(
                f"Invalid backend {shown(self.backend)!r}. Only {', '.join(BACKEND_CHOICES)} are supported."
            )


def model_identity(
    model_path: str | os.PathLike[str], meta: Any, served: bool = False
) -> tuple[Path | str, str]:
    """(where the model is, its identity) as a manifest records them: a file's absolute path and
    sha256; or, `served` by a Triton server (`model_path` `SCHEME://HOST:PORT/MODEL`), its URL and
    `SERVED_MODEL` + the hash of what does not depend on how the server is reached (the model's
    checkpoint, precision and name), so a run resumes against the same served model only, whether
    the server is named by 127.0.0.1 or localhost."""
    import hashlib

    if served:
        name = str(model_path).rstrip("/").rpartition("/")[2]
        what = f"{meta.checkpoint_sha256} {meta.precision} {name}"
        return str(model_path), SERVED_MODEL + hashlib.sha256(what.encode()).hexdigest()
    path = Path(model_path).resolve()
    return path, sha256_file(path)


@dataclass
class EmbedResult:
    """What an embed did: the folder, the manifest it wrote, the backend and the images it was given."""

    out: Path
    manifest: dict[str, Any]
    backend: Any  # backends.base.BackendInfo
    images: Any  # embedder.ImageSources: paths, root, duplicates skipped
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """What `invedge embed --json` prints: the manifest, where it is, and the run's own figures."""
        return self.manifest | {
            "path": str(self.out),
            "total_seconds": round(self.seconds, 3),
            "duplicates_skipped": len(self.images.duplicates),
        }


def embeddings_out(out: str | os.PathLike[str]) -> Path:
    """`out` as the writer needs it: absolute when the working folder is inside it.

    `--out .` (or ..): a swap cannot rename "." (EBUSY), and once the old folder is gone a
    relative path would point into the removed working folder.
    """
    out = Path(out)
    return out.absolute().resolve() if Path.cwd().resolve().is_relative_to(out.resolve()) else out


@contextlib.contextmanager
def claimed_output(options: EmbedOptions) -> Iterator[Any]:
    """The images found, under the lock of `options.out`, after the refusals: every embed's prelude.

    The cheap refusals of `out` come first, then the images are found, then the lock is taken
    (a second writer waits, then finds the first one's result and refuses) and `out` checked again.
    """
    from ..locks import exclusive_lock

    out = options.out
    check_output(out, options.overwrite, options.extends)  # before any work, and again under the lock
    found = find_inputs(options.images)
    if options.ray is not None and found.videos:
        raise ConfigError(
            f"--ray embeds images only; video sources run in this process (first: {found.videos[0].name})",
            "Drop --ray, or embed the videos in a separate run without it",
        )
    check_sources(found.videos, options.streams)
    with exclusive_lock(out, "embeddings folder"):
        recover(out)  # a swap cut short: finished or undone, or its leftover named, before any work
        check_output(out, options.overwrite, options.extends)
        yield found


def embed_in_process(
    options: EmbedOptions,
    *,
    on_start: Callable[[Any, Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    events: FrameEvents | None = None,
) -> EmbedResult:
    """The embed in this process (job.embed_images chooses it, or Ray's).

    The refusals of `out` and the images come first (`claimed_output`), then the model opens under
    the lock. `on_start(embedder, images)` is called once the model is open, `on_progress(done,
    total)` after each batch; then the frames of the video sources are embedded (`events` hears
    of them). Ctrl-C raises `EmbeddingInterrupted` once what was embedded is saved.
    """
    from ..embedder import Embedder

    started = time.perf_counter()
    sizes = {} if options.batch is None else {"batch_size": options.batch}
    with (
        claimed_output(options) as found,
        Embedder(
            options.model,
            backend=options.backend,
            threads=model_threads(options.threads, decoding=bool(found.videos)),
            precision=options.precision,
            **sizes,
        ) as embedder,
    ):
        if on_start is not None:
            on_start(embedder, found)
        after, lost = None, []
        if found.videos:

            def after(writer: EmbeddingWriter) -> dict[str, Any]:
                return embed_sources(
                    writer, embedder, found.videos, options.streams, events, options.batch, lost
                )

        manifest = embed_to_folder(
            embedder,
            found.paths,
            found.root,
            options.out,
            dtype=options.dtype,
            overwrite=options.overwrite,
            retry_failed=options.extends,
            on_progress=on_progress,
            lock=False,
            after=after,
            sampling=options.streams.sampling.selection() if found.videos else None,
        )
    if lost:  # a stream gone for good: the folder is finished and readable, the run still failed
        raise SourceError(
            f"{lost[0]}; the {manifest.get('count', 0):,} items embedded are saved in {options.out}",
            "Check the stream, then run the same command again: it appends to the folder",
        )
    return EmbedResult(options.out, manifest, embedder.info, found, time.perf_counter() - started)
