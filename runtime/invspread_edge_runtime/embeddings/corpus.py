"""The corpus-embedding job: images → an embeddings folder, resumable, under the folder's lock."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import pause_for_test, sha256_file
from .folder import check_output
from .layout import DEFAULT_DTYPE, PART_SIZE, PARTS
from .writer import EmbeddingWriter


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
) -> dict[str, Any]:
    """Embed `paths` with an `embed.Embedder` into an embeddings folder; resumes an unfinished one.

    Holds the lock of `out` throughout (a second writer waits, then sees the finished folder);
    `lock=False` when the caller holds it already (as `invedge embed` does, to check `out` before
    it opens the model).
    `on_progress(done, total)` is called after each batch (`done` counts resumed images too).
    Unreadable images are skipped and listed in the manifest; a rerun of an unfinished folder, or
    `retry_failed` on a finished one, tries them again. Ctrl-C raises `EmbeddingInterrupted`
    after saving what was embedded. Returns the manifest.
    """
    from ..locks import exclusive_lock

    meta = embedder.meta
    model_path = Path(embedder.info.model_path).resolve()
    model_sha = sha256_file(model_path)
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
        )
        pending = iter_new(paths, Path(writer.root), writer.done_ids)
        total = len(paths)
        if writer.base is not None and not pending and not writer.base.failed:
            shutil.rmtree(writer.work, ignore_errors=True)  # --retry-failed with nothing to retry
            return writer.base.manifest | {"resumed": len(writer.base), "seconds": 0.0}
        done = total - len(pending)
        resumed = writer.count
        started = time.perf_counter()
        if on_progress is not None:
            on_progress(done, total)
        try:
            for batch in embedder.embed_batches([p for _, p in pending]):
                writer.add([pending[i][0] for i in batch.positions], batch.vectors)
                for position, reason in batch.failures:
                    writer.add_failure(pending[position][0], reason)
                done += len(batch.positions) + len(batch.failures)
                if on_progress is not None:
                    on_progress(done, total)
                pause_for_test("embed-batch")
            seconds = time.perf_counter() - started
            return writer.finish(
                {
                    "backend": embedder.info.name,
                    "resumed": resumed,
                    "seconds": round(seconds, 3),
                }
            )
        except KeyboardInterrupt as exc:  # in the loop or the join
            writer.flush()  # Ctrl-C: keep what was embedded, the next run resumes after it
            raise EmbeddingInterrupted(Path(out), writer.work, writer.count, total) from exc


@dataclass
class EmbedRun:
    """What `embed_images` did: the manifest it wrote, the backend and the images it was given."""

    manifest: dict[str, Any]
    backend: Any  # backends.base.BackendInfo
    images: Any  # embedder.ImageSources: paths, root, duplicates skipped
    seconds: float


def embeddings_out(out: str | os.PathLike[str]) -> Path:
    """`out` as the writer needs it: absolute when the working folder is inside it.

    `--out .` (or ..): a swap cannot rename "." (EBUSY), and once the old folder is gone a
    relative path would point into the removed working folder.
    """
    out = Path(out)
    return out.absolute().resolve() if Path.cwd().resolve().is_relative_to(out.resolve()) else out


def embed_images(
    model: str | os.PathLike[str],
    images: list[Path],
    out: str | os.PathLike[str],
    *,
    backend: str = "auto",
    batch_size: int | None = None,
    threads: int = 0,
    precision: str | None = None,
    dtype: str = DEFAULT_DTYPE,
    overwrite: bool = False,
    retry_failed: bool = False,
    on_start: Callable[[Any, Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedRun:
    """Embed image files and folders with `model` into the embeddings folder `out`: `invedge embed`.

    The cheap refusals of `out` come first, then the images are found, then the lock of `out` is
    taken (a second writer waits, then finds the first one's result and refuses) before the model
    opens. `on_start(embedder, images)` is called once the model is open, `on_progress(done, total)`
    after each batch. Ctrl-C raises `EmbeddingInterrupted` once what was embedded is saved.
    """
    from ..embedder import Embedder, find_images
    from ..locks import exclusive_lock

    out = embeddings_out(out)
    check_output(out, overwrite, retry_failed)  # before any work, and again under the lock
    started = time.perf_counter()
    found = find_images(images)
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    with exclusive_lock(out, "embeddings folder"):
        check_output(out, overwrite, retry_failed)
        with Embedder(model, backend=backend, threads=threads, precision=precision, **sizes) as embedder:
            if on_start is not None:
                on_start(embedder, found)
            manifest = embed_to_folder(
                embedder,
                found.paths,
                found.root,
                out,
                dtype=dtype,
                overwrite=overwrite,
                retry_failed=retry_failed,
                on_progress=on_progress,
                lock=False,
            )
    return EmbedRun(manifest, embedder.info, found, time.perf_counter() - started)
