"""Dynamic batching: images that arrive together go to the backend as one batch, as Triton does.

One worker thread owns the backend (GPU sessions are not thread-safe): it takes the first image
waiting and every other one already queued, up to `max_batch`; it waits for more (at most
`max_wait_ms` after the first) only while other images are on their way (being decoded: the app
announces them with `arriving`), so a lone request never waits for company that is not coming.
The batch runs as one `Embedder.embed_uint8` call (the same normalisation and L2 step as `Embedder.embed`).
The queue is bounded: when it is full, `embed` refuses at once (503 with Retry-After) rather than
letting latency grow without bound; a request of more images than the queue holds can never be
served and is refused as too large (413). Results travel back to the event loop through asyncio
futures, one hand-off per batch and loop (each `call_soon_threadsafe` wakes the loop: a syscall). A batch the backend fails on (any exception, even one that is not an `Exception`) fails
its requests with a 500 and the worker goes on with the next batch: it never dies with requests
waiting on it.

    batcher = DynamicBatcher(embedder, max_batch=32, max_wait_ms=5, queue=256)
    batcher.start()
    vectors = await batcher.embed([chw_uint8, ...])   # (N, d) float32
    batcher.stop()                                    # after the last request: drains, joins
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..embedder import Embedder
from .errors import backend_failed, queue_full, shutting_down, too_many_images


@dataclass
class _Job:
    image: np.ndarray  # (3, S, S) uint8
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


_STOP = object()
LOG = logging.getLogger("invedge.serve")


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
        self._failures = 0  # batches the backend failed on (the first one's traceback is logged)

    def start(self) -> None:
        self._accepting = True
        self._thread.start()

    @property
    def accepting(self) -> bool:
        """True between start() and stop(): a 503 then means busy, not shutting down."""
        return self._accepting

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

    def check_fits(self, count: int) -> None:
        """413 for `count` images: more than the queue ever holds (refused before they are decoded)."""
        if count > self.queue_size:
            raise too_many_images(count, self.queue_size, f"--queue {self.queue_size}")

    async def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, d) float32 unit rows for N (3, S, S) uint8 images; 503 when the queue has no room now,
        413 when it never will."""
        if not self._accepting:
            raise shutting_down()
        self.check_fits(len(images))
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
        while self._thread.is_alive():  # a full queue: wait for room while the worker drains it
            try:
                self._jobs.put(_STOP, timeout=0.1)
            except queue.Full:
                continue
            self._thread.join()

    # --- the worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                batch, stopping = self._next_batch()
                if batch:
                    self._run(batch)
                if stopping:
                    return
        finally:  # nothing waits forever: an image queued after the stop gets its refusal
            self._accepting = False
            self._refuse_waiting()

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
        try:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            vectors = self.embedder.embed_uint8(np.stack([job.image for job in batch]))
            if len(vectors) != len(batch):
                raise RuntimeError(f"{len(vectors)} vectors back for {len(batch)} images")
        except BaseException as exc:  # a backend failure fails this batch's requests, not the service
            self._failed(exc, batch)
            return
        _answer(batch, _settle, list(vectors))

    def _failed(self, exc: BaseException, batch: list[_Job]) -> None:
        """Fail the batch's requests with a 500; the log gets one line (the first time, the traceback)."""
        error = backend_failed(exc, len(batch))
        self._failures += 1
        LOG.error(
            "%s (failed batches so far: %d)", error.message, self._failures, exc_info=self._failures == 1
        )
        _answer(batch, _settle_error, [error] * len(batch))

    def _refuse_waiting(self) -> None:
        stopped = shutting_down()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                _answer([job], _settle_error, [stopped])


Settle = Callable[[asyncio.Future[np.ndarray], Any], None]


def _answer(jobs: list[_Job], settle: Settle, values: list[Any]) -> None:
    """Hand each job its value on its event loop, one call per loop; a loop already closed (its
    requests are gone) is skipped."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[np.ndarray], Any]]] = {}
    for job, value in zip(jobs, values, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, value))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_all, settle, pairs)


def _settle_all(settle: Settle, pairs: list[tuple[asyncio.Future[np.ndarray], Any]]) -> None:
    for future, value in pairs:
        settle(future, value)


def _settle(future: asyncio.Future[np.ndarray], vector: np.ndarray) -> None:
    if not future.done():  # a request that went away (client closed) cancelled its future
        future.set_result(vector)


def _settle_error(future: asyncio.Future[np.ndarray], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
