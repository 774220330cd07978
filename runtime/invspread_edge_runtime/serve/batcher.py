"""Dynamic batching: images that arrive together go to the backend as one batch, as Triton does.

One worker thread owns the backend (GPU sessions are not thread-safe): it takes the first image
waiting and every other one already queued, up to `max_batch`; it waits for more (at most
`max_wait_ms` after the first) only while other images are on their way (being decoded: the app
announces them with `arriving`), so a lone request never waits for company that is not coming.
The batch runs as one `Embedder.embed_uint8` call (the same normalisation and L2 step as `Embedder.embed`).
The queue is bounded: when it is full, `submit` refuses at once (the app answers 503 with
Retry-After) rather than letting latency grow without bound. Results travel back to the event
loop through asyncio futures.

    batcher = DynamicBatcher(embedder, max_batch=32, max_wait_ms=5, queue=256)
    batcher.start()
    vectors = await batcher.embed([chw_uint8, ...])   # (N, d) float32
    batcher.stop()                                    # after the last request: drains, joins
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder
from .errors import ServeError, queue_full


@dataclass
class _Job:
    image: np.ndarray  # (3, S, S) uint8
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class DynamicBatcher:
    """Batches images for one backend; see the module docstring."""

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        backend_max = embedder.info.max_batch  # a TensorRT profile's largest batch
        self.embedder = embedder
        self.max_batch = min(max_batch, backend_max) if backend_max else max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._work, name="invedge-batcher", daemon=True)
        self._accepting = False
        self._arriving = 0  # images being decoded for this batcher (changed on the event loop only)

    def start(self) -> None:
        self._accepting = True
        self._thread.start()

    def depth(self) -> int:
        """Images waiting for the backend."""
        return self._jobs.qsize()

    @contextlib.contextmanager
    def arriving(self, count: int) -> Iterator[None]:
        """Around decoding `count` images that will be submitted: the worker waits for them."""
        self._arriving += count
        try:
            yield
        finally:
            self._arriving -= count

    async def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, d) float32 unit rows for N (3, S, S) uint8 images; 503 when the queue has no room."""
        if not self._accepting:
            raise ServeError(
                503, "the service is shutting down", "Retry on another instance", {"Retry-After": "1"}
            )
        # the event loop is the only producer: room checked here stays room until the puts below
        if self.depth() + len(images) > self.queue_size:
            raise queue_full(self.depth())
        loop = asyncio.get_running_loop()
        futures = []
        for image in images:
            job = _Job(image, loop.create_future(), loop)
            self._jobs.put_nowait(job)
            futures.append(job.future)
        return np.stack(await asyncio.gather(*futures))

    def stop(self) -> None:
        """Refuse new images, run those queued, and end the worker thread."""
        self._accepting = False
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()

    # --- the worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch, stopping = self._next_batch()
            if batch:
                self._run(batch)
            if stopping:
                return

    def _next_batch(self) -> tuple[list[_Job], bool]:
        """The first job waiting, the others queued, and, while more are on their way, those that come
        within max_wait after the first; up to max_batch. (jobs, stop?)"""
        first = self._jobs.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and self._arriving > 0:
                    job = self._jobs.get(timeout=remaining)
                else:
                    job = self._jobs.get_nowait()
            except queue.Empty:
                if remaining > 0 and self._arriving > 0:
                    continue
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False  # type: ignore[return-value]

    def _run(self, batch: list[_Job]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            vectors = self.embedder.embed_uint8(np.stack([job.image for job in batch]))
        except Exception as exc:  # a backend failure fails this batch's requests, not the service
            for job in batch:
                job.loop.call_soon_threadsafe(_settle_error, job.future, exc)
            return
        for job, vector in zip(batch, vectors, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, vector)


def _settle(future: asyncio.Future[np.ndarray], vector: np.ndarray) -> None:
    if not future.done():  # a request that went away (client closed) cancelled its future
        future.set_result(vector)


def _settle_error(future: asyncio.Future[np.ndarray], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
