"""Images → L2-normalised embeddings, with a backend opened here (`open_backend`).

Decoding and resizing run in a thread pool a few batches ahead of the model (Pillow and numpy
release the GIL while they work, and so does every backend while it infers), so the model does not
wait on JPEG decoding. Preprocessing is `preprocess.py`'s, driven by the model's own metadata.

    emb = Embedder("model.int8.onnx")           # or an export folder; backend="auto"
    vecs = emb.embed(["a.jpg", "b.png"])         # (2, d) float32
    emb = Embedder("triton:grpc://host:8001")   # the model runs on a Triton server (backends/triton.py)
    emb = Embedder(backend="triton:grpc://host:8001")  # the same
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .backends import select
from .backends.base import Backend, BackendInfo, EngineCheck
from .backends.select import DEFAULT_BACKEND
from .errors import DataError, InvedgeError
from .metadata import ModelMeta
from .preprocess import frame_to_uint8_chw, load_image, normalize, to_rgb, to_uint8_chw
from .verify.engines import PROBE_CHECK

if TYPE_CHECKING:
    from .sources.frame import Frame
    from .sources.spec import VideoInput

ImageLike = str | os.PathLike[str] | Image.Image
PREFETCH_BATCHES = 2  # batches decoded ahead of the one the model is running
DEFAULT_BATCH_SIZE = 64  # images per inference call


def open_backend(
    model: str | os.PathLike[str] | None,
    backend: str = DEFAULT_BACKEND,
    threads: int = 0,
    precision: str | None = None,
    max_batch: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
    *,
    engine_path: str | os.PathLike[str] | None = None,
    trust_engine: bool = False,
    check: EngineCheck | None = PROBE_CHECK,
) -> Backend:
    """Open `model` (file, export folder, or `triton:URL`: a Triton server's model) on `backend`
    ("auto", one of `backends.select.BACKENDS`, or `triton:URL`: then `model` may be None):
    `backends.select.open_backend`, with every engine TensorRT builds here checked against the
    probe set beside its ONNX file before it is kept (`check`; None keeps an engine unchecked)."""
    return select.open_backend(
        model,
        backend,
        threads=threads,
        precision=precision,
        max_batch=max_batch,
        cache_dir=cache_dir,
        device_id=device_id,
        engine_path=engine_path,
        trust_engine=trust_engine,
        check=check,
    )


@dataclass
class EmbeddedBatch:
    """One batch's result: `positions` index into the caller's input list."""

    positions: list[int]
    vectors: np.ndarray  # (len(positions), d) float32, L2-normalised
    failures: list[tuple[int, str]] = field(default_factory=list)  # (position, reason): skipped


class Embedder:
    """Embed images with an exported model; see the module docstring."""

    def __init__(
        self,
        model: str | os.PathLike[str] | Backend | None = None,  # None: backend="triton:URL"
        backend: str = DEFAULT_BACKEND,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
        decode_workers: int = 0,
        precision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        engine_path: str | os.PathLike[str] | None = None,
        trust_engine: bool = False,  # load an engine_path without its sidecar (backends.select)
        finite_only: bool = True,  # NaN or inf out of the model raises (verify measures them instead)
    ) -> None:
        if batch_size < 1:
            raise InvedgeError(f"Invalid batch size {batch_size}. It must be at least 1.")
        if isinstance(model, Backend):
            self.backend = model
        else:
            self.backend = open_backend(
                model,
                backend,
                threads=threads,
                precision=precision,
                cache_dir=cache_dir,
                engine_path=engine_path,
                trust_engine=trust_engine,
            )
        self.meta: ModelMeta = self.backend.meta  # the ONNX file's, also when an engine file runs
        self.batch_size = batch_size
        self.finite_only = finite_only
        self.decode_workers = decode_workers or max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="invedge-decode")

    @property
    def info(self) -> BackendInfo:
        return self.backend.info

    @property
    def notes(self) -> list[str]:
        """How the backend was chosen (see backends.select.open_backend)."""
        return list(self.backend.notes)

    @property
    def space_id(self) -> str:
        return self.meta.space_id

    def embed(self, images: Sequence[ImageLike], skip_unreadable: bool = False) -> np.ndarray:
        """(N, d) float32 L2-normalised rows, in input order.

        An unreadable image raises DataError, unless `skip_unreadable`: then it is left out (use
        `embed_batches` to learn which).
        """
        parts = []
        for batch in self.embed_batches(images):
            if batch.failures and not skip_unreadable:
                reason = batch.failures[0][1]
                raise DataError(reason, f"{len(batch.failures)} unreadable image(s) in this batch")
            parts.append(batch.vectors)
        if not parts:
            return np.zeros((0, self.meta.embedding_dim), dtype=np.float32)
        return np.concatenate(parts)

    def embed_batches(self, images: Sequence[ImageLike]) -> Iterator[EmbeddedBatch]:
        """Embed batch by batch, decoding ahead in the thread pool; unreadable images are reported."""
        pending: deque[list[Future]] = deque()
        starts = iter(range(0, len(images), self.batch_size))

        def submit_next() -> bool:
            start = next(starts, None)
            if start is None:
                return False
            positions = list(range(start, min(start + self.batch_size, len(images))))
            pending.append(self._submit_decode(images, positions))
            return True

        for _ in range(PREFETCH_BATCHES + 1):
            if not submit_next():
                break
        while pending:
            futures = pending.popleft()
            arrays, kept, failures = [], [], []
            for future in futures:
                chunk_arrays, chunk_kept, chunk_failures = future.result()
                arrays.extend(chunk_arrays)
                kept.extend(chunk_kept)
                failures.extend(chunk_failures)
            submit_next()  # keep the pool busy while the model runs
            if arrays:
                vectors = self.embed_uint8(np.stack(arrays))
            else:
                vectors = np.zeros((0, self.meta.embedding_dim), dtype=np.float32)
            yield EmbeddedBatch(kept, vectors, failures)

    def embed_frames(
        self, frames: Iterable[Frame], batch_size: int | None = None, *, ahead: int | None = None
    ) -> Iterator[tuple[list[Frame], np.ndarray]]:
        """Decoded video frames → (those frames, their (n, d) float32 L2-normalised vectors), in order.

        Each frame is resized and cropped exactly as an image file is
        (`preprocess.frame_to_uint8_chw`), in the thread pool, `ahead` batches ahead of the model
        (default: PREFETCH_BATCHES), so the source's decoding, this preprocessing and inference
        overlap. A batch of one (live sources: the lowest latency) takes no frame ahead by default:
        a live source keeps only its newest frame while the model is busy, and a frame taken early
        would be an older one.
        """
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise InvedgeError(f"Invalid batch size {size}. It must be at least 1.")
        ahead = (PREFETCH_BATCHES if size > 1 else 0) if ahead is None else ahead
        source = iter(frames)
        pending: deque[tuple[list[Frame], list[Future]]] = deque()

        def submit_next() -> bool:
            batch = list(islice(source, size))
            if not batch:
                return False
            chunk = max(1, -(-len(batch) // self.decode_workers))
            futures = [
                self._pool.submit(self._frames_chunk, batch[i : i + chunk])
                for i in range(0, len(batch), chunk)
            ]
            pending.append((batch, futures))
            return True

        for _ in range(ahead + 1):
            if not submit_next():
                break
        while pending:
            batch, futures = pending.popleft()
            arrays = [array for future in futures for array in future.result()]
            if ahead:
                submit_next()  # keep the pool (and the source) busy while the model runs
            yield batch, self.embed_uint8(np.stack(arrays))
            if not ahead:
                submit_next()  # the newest frame once the model is free again

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) uint8 images already resized (e.g. an ImageSet) → (N, d) normalised."""
        return self.backend.embed_uint8(batch, self.finite_only)

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """The model's exact input for these images: (N, 3, S, S) float32."""
        return normalize(np.stack([self._load(img) for img in images]), self.meta.mean, self.meta.std)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.backend.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- decoding -------------------------------------------------------------------------------

    def _submit_decode(self, images: Sequence[ImageLike], positions: list[int]) -> list[Future]:
        """Split one batch into a chunk per worker: fewer, larger tasks than one per image."""
        size = max(1, -(-len(positions) // self.decode_workers))
        return [
            self._pool.submit(self._decode_chunk, images, positions[i : i + size])
            for i in range(0, len(positions), size)
        ]

    def _decode_chunk(
        self, images: Sequence[ImageLike], positions: list[int]
    ) -> tuple[list[np.ndarray], list[int], list[tuple[int, str]]]:
        arrays, kept, failures = [], [], []
        for position in positions:
            try:
                arrays.append(self._load(images[position]))
                kept.append(position)
            except DataError as exc:
                failures.append((position, exc.message))  # "unreadable image PATH: why"
        return arrays, kept, failures

    def _frames_chunk(self, frames: list[Frame]) -> list[np.ndarray]:
        return [frame_to_uint8_chw(frame.rgb, self.meta.image_size) for frame in frames]

    def _load(self, image: ImageLike) -> np.ndarray:
        # in-memory images take the same decoding rules as files (16-bit, EXIF, alpha: preprocess.to_rgb)
        pil = to_rgb(image) if isinstance(image, Image.Image) else load_image(Path(image))
        return to_uint8_chw(pil, self.meta.image_size)


@dataclass
class ImageSources:
    """The image files found for a list of files and folders, each once."""

    paths: list[Path]  # in the order given (a folder's files sorted)
    root: Path  # the common folder: ids are paths relative to it
    duplicates: list[Path] = field(default_factory=list)  # given more than once: embedded once
    # video files, streams and cameras given beside the images (embeddings.videos.find_inputs)
    videos: list[VideoInput] = field(default_factory=list)

    def note(self) -> str | None:
        """A line for the user when some files were given more than once, else None."""
        if not self.duplicates:
            return None
        n = len(self.duplicates)
        return (
            f"{n} image file{'s' * (n != 1)} given more than once (e.g. {self.duplicates[0]}, "
            "or a file and its folder): each is embedded once"
        )


def find_images(sources: Sequence[str | os.PathLike[str]]) -> ImageSources:
    """Image files named directly or found under folders (sorted), each once, and their root.

    A file reached twice (named twice, named and inside a named folder, or through a link to
    the same file) is kept at its first place; the others are listed in `duplicates`.
    """
    from .preprocess import IMAGE_SUFFIXES, list_images

    if not sources:
        raise DataError("no images given", "Pass image files or folders")
    found: list[Path] = []
    for source in (Path(s).absolute() for s in sources):
        if source.is_dir():
            found.extend(list_images(source))
        elif source.is_file():
            if source.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"not an image file: {source}", f"Supported types: {', '.join(IMAGE_SUFFIXES)}"
                )
            found.append(source)
        else:
            raise DataError(f"not found: {source}", "Check the path of the images")
    seen: set[Path] = set()
    paths, duplicates = [], []
    for path in found:
        key = path.resolve()
        if key in seen:
            duplicates.append(path)
            continue
        seen.add(key)
        paths.append(path)
    folders = [Path(s).absolute() if Path(s).is_dir() else Path(s).absolute().parent for s in sources]
    root = Path(os.path.commonpath([str(f) for f in folders]))
    return ImageSources(paths, root, duplicates)


def collect_images(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], Path]:
    """`find_images` as (paths, root): each file once."""
    found = find_images(sources)
    return found.paths, found.root
