"""The reader threads behind every decoder: a file's frames through a bounded queue (none dropped,
the decoder waits for the consumer), a live source's through a one-slot mailbox (the newest frame
wins, so a slow model never falls behind the camera) with reconnects.

A decoder hands a reader plain iterators, so the same threading, sampling, counting and fault
handling serve PyAV and GStreamer alike:
- a file: an iterator of `(time, rgb)` pairs, `rgb` a callable that converts the decoded picture
  (called for kept frames only); it raises `Damaged` when decoding stops early;
- a live source: `connect()`, which opens the stream (raising `SourceError` when it cannot) and
  returns an iterator of `rgb` callables; the iterator ends or raises when the stream drops.
Each iterator is a `Releasing`: its close() frees the container or pipeline even when it was never
started (a generator that never ran never reaches its `finally`).

No text of a decoder's error goes into a message as it is: PyAV's names the URL it opened, with
its password (`error_text`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from ..errors import InvedgeError, SourceError
from .frame import Frame, FrameSource, SourceStats
from .sampling import Sampling

Picture = Callable[[], np.ndarray]  # converts one decoded picture to (H, W, 3) uint8 RGB
Connect = Callable[[], Iterator[Picture]]
FILE_QUEUE = 4  # frames decoded ahead of the consumer: enough to overlap decoding with the model
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # seconds before a reconnect: doubled after each failed try
JOIN_SECONDS = 2.0  # how long close() waits for the reader thread (a blocked read ends at its timeout)
_END = object()
_DONE = object()  # a kept frame embedded already: counted by the consumer, not converted
T = TypeVar("T")


class Damaged(Exception):
    """A file whose decoding stopped early; the message says what the decoder said, and where."""


class Releasing(Generic[T]):
    """An iterator that owns what it reads from (a container, a pipeline): close() releases it,
    also when iteration never started."""

    def __init__(self, items: Iterator[T], release: Callable[[], None]) -> None:
        self._items, self._release = items, release

    def __iter__(self) -> Releasing[T]:
        return self

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # "generator already executing": its own thread closes it when it stops
                return
        self._release()


def error_text(error: BaseException) -> str:
    """What went wrong, for a message: an InvedgeError's message, else the OS/FFmpeg reason or the
    type's name, never str(error) (PyAV's holds the URL it opened, password and all)."""
    if isinstance(error, InvedgeError):
        return error.message
    return getattr(error, "strerror", None) or type(error).__name__


class _ReaderSource(FrameSource):
    """What both readers share: the thread, the events, close()."""

    def __init__(self, name: str, decoder: str, live: bool, on_event: Callable[[str], None] | None) -> None:
        self.name, self.decoder, self.live = name, decoder, live
        self.stats = SourceStats()
        self._on_event = on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _event(self, line: str) -> None:
        self.stats.events.append(line)
        if self._on_event is not None:
            self._on_event(line)

    def _start(self, target: Callable[[], None]) -> None:
        if self._thread is not None:
            raise RuntimeError(f"frames() of {self.name} was already called: open the source again")
        self._thread = threading.Thread(target=target, name=f"invedge-source {self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is None:
            self._release()
        elif thread is not threading.current_thread():
            thread.join(JOIN_SECONDS)

    def _wake(self) -> None:
        """Wake a consumer that waits for a frame (close() from another thread)."""

    def _release(self) -> None:
        """Close what was opened when no thread ever ran."""


class FileReader(_ReaderSource):
    """A finite source: every frame the sampling keeps, in order, none dropped. `done(time)`: the
    kept frame at `time` is embedded already (a resumed run): the sampler still sees it, so that
    what is kept after it is what an uninterrupted run keeps, but it is counted, not converted."""

    def __init__(
        self,
        name: str,
        decoder: str,
        decoded: Iterator[tuple[float, Picture]],
        sampling: Sampling,
        *,
        on_event: Callable[[str], None] | None = None,
        queue_size: int = FILE_QUEUE,
        done: Callable[[float], bool] | None = None,
    ) -> None:
        super().__init__(name, decoder, live=False, on_event=on_event)
        self._decoded, self._done = decoded, done
        self._sampler = sampling.sampler()
        self._queue: queue.Queue[object] = queue.Queue(queue_size)

    def frames(self) -> Iterator[Frame]:
        self._start(self._read)
        try:
            while (item := self._get()) is not _END:
                self.stats.kept += 1
                if item is not _DONE:
                    assert isinstance(item, Frame)
                    yield item
        finally:  # also when the consumer stops early: the reader must not wait on a full queue
            self._stop.set()
        if self._error is not None:
            raise self._error

    def _get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:  # a reader that died before saying _END must not hang the consumer
                if not (self._thread and self._thread.is_alive()) and self._queue.empty():
                    return _END

    def _put(self, item: object) -> bool:
        """Wait for room (backpressure); False when closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for time_s, rgb in self._decoded:
                index = self.stats.decoded
                self.stats.decoded += 1
                if self._stop.is_set():
                    break
                if self._sampler.keep(time_s) and not self._put(self._kept(rgb, index, time_s)):
                    break
                if self._sampler.finished:
                    break
        except Damaged as damage:
            self.stats.damage = str(damage)
            self._event(f"{self.name} is damaged: {damage}")
        except BaseException as error:  # a decoder's bug: raised in the consumer's thread
            self._error = error
        finally:
            _close_iterator(self._decoded)
            self._put(_END)

    def _kept(self, rgb: Picture, index: int, time_s: float) -> object:
        if self._done is not None and self._done(time_s):
            return _DONE
        return Frame(rgb(), self.name, index, time_s)

    def _release(self) -> None:
        _close_iterator(self._decoded)


class LiveReader(_ReaderSource):
    """A live source: the newest kept frame, reconnecting with backoff when the stream drops."""

    def __init__(
        self,
        name: str,
        decoder: str,
        connect: Connect,
        sampling: Sampling,
        *,
        reconnect: int = 5,
        on_event: Callable[[str], None] | None = None,
        first: Iterator[Picture] | None = None,
        backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
    ) -> None:
        """`first`: the stream `connect()` already opened (open_source opens it to report a source
        that does not answer before anything runs); None: the thread connects."""
        super().__init__(name, decoder, live=True, on_event=on_event)
        self._connect, self._stream = connect, first
        self._reconnect, self._backoff = reconnect, backoff
        # --max-frames counts the frames handed to the consumer, not those the mailbox replaced
        self._max_frames = sampling.max_frames
        self._sampler = dataclasses.replace(sampling, max_frames=None).sampler()
        self._slot: Frame | None = None
        self._done = False
        self._ready = threading.Condition()
        self._failures = 0  # consecutive failed connections or reads
        self._last = 0.0  # the last frame's time: each frame gets a later one (distinct ids)

    def frames(self) -> Iterator[Frame]:
        self._start(self._read)
        try:
            while self._max_frames is None or self.stats.kept < self._max_frames:
                frame = self._take()
                if frame is None:
                    break
                self.stats.kept += 1
                yield frame
        finally:  # the sampling is done, or the consumer stopped: the reader stops too
            self._stop.set()
        if self._error is not None:
            raise self._error

    def _take(self) -> Frame | None:
        with self._ready:
            while self._slot is None and not self._done and not self._stop.is_set():
                self._ready.wait()
            frame, self._slot = self._slot, None
            return frame

    def _wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _offer(self, frame: Frame) -> None:
        with self._ready:
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = frame
            self._ready.notify_all()

    def _read(self) -> None:
        try:
            while not self._stop.is_set() and not self._sampler.finished:
                if self._stream is None:
                    try:
                        self._stream = self._connect()
                    except Exception as error:  # any failure to connect is a failed try
                        if self._lost(f"reconnect failed: {error_text(error)}"):
                            continue
                        break
                    if self._stop.is_set():  # closed while connecting: read nothing (finally closes it)
                        break
                reason = self._pump(self._stream)
                if reason is not None and not self._lost(reason):
                    break
        except BaseException as error:
            self._error = error
        finally:
            _close_iterator(self._stream)
            self._stream = None
            with self._ready:
                self._done = True
                self._ready.notify_all()

    def _pump(self, stream: Iterator[Picture]) -> str | None:
        """Read until the stream ends or fails (what happened) or until stopped (None)."""
        try:
            for rgb in stream:
                if self._failures:
                    self._failures = 0
                    self.stats.reconnects += 1
                    self._event(f"reconnected to {self.name}")
                index = self.stats.decoded
                self.stats.decoded += 1
                now = self._stamp()
                if self._sampler.keep(now):
                    self._offer(Frame(rgb(), self.name, index, now, live=True))
                if self._stop.is_set() or self._sampler.finished:
                    return None
            reason = "the stream ended"
        except Exception as error:  # the decoder's own errors (FFmpeg, GStreamer): a dropped stream
            reason = error_text(error)
        _close_iterator(stream)
        self._stream = None
        return None if self._stop.is_set() else reason

    def _stamp(self) -> float:
        """The arrival time, to the millisecond of ids, later than the last frame's: frames that
        arrive in a burst within one millisecond still get distinct ids."""
        self._last = round(max(time.time(), self._last + 0.001), 3)
        return self._last

    def _lost(self, reason: str) -> bool:
        """Count a failure, wait the backoff; False when the reconnects are used up (or closed)."""
        self._failures += 1
        if self._failures > self._reconnect:
            tries = f"after {self._reconnect} reconnect{'s' if self._reconnect != 1 else ''}"
            self._error = SourceError(
                f"{self.name}: lost ({reason}) {tries}",
                "Check that the camera or server is up and reachable; --reconnect N allows more tries",
            )
            return False
        first, most = self._backoff
        delay = min(first * 2 ** (self._failures - 1), most)
        self._event(
            f"{self.name}: {reason}; reconnecting in {delay:g} s (try {self._failures} of {self._reconnect})"
        )
        return not self._stop.wait(delay)

    def _release(self) -> None:
        _close_iterator(self._stream)
        self._stream = None


def _close_iterator(iterator: object) -> None:
    """Close a generator (its `finally` closes the container or pipeline)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # "generator already executing": its thread closes it
            close()
