"""The timing harness: warm-up, then measured iterations, every sample kept.

Warm-up runs `warmup_iters` calls and goes on until `warmup_seconds` have passed (both hold).
Measurement runs `iters` calls, or for `seconds` (at least `min_iters` calls either way).
Each iteration reports up to three times, measured around the same call so they are comparable:

- `e2e`: preprocessing + host→device copy + compute + device→host copy (wall clock);
- `infer`: the backend call alone, copies included, preprocessing excluded (wall clock);
- `device`: compute on the device with copies excluded (CUDA events), where a backend offers it.

The clock is injectable so the harness's bookkeeping is testable without real delays.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..bounds import BENCH_ITERS, BENCH_SECONDS, WARMUP_CALLS, WARMUP_SECONDS
from ..errors import InvedgeError
from .stats import LatencyStats

Clock = Callable[[], float]


DEFAULT_WARMUP = "5"  # warm-up calls per row (--warmup: a count, or a duration such as "2s")
DEFAULT_SECONDS = 3.0  # measured time per row when no --iters is given


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and how long to measure."""

    warmup_iters: int = int(DEFAULT_WARMUP)
    warmup_seconds: float = 0.0
    iters: int | None = None  # measure by count ...
    seconds: float | None = DEFAULT_SECONDS  # ... or by time (exactly one of the two is set)
    min_iters: int = 5
    max_iters: int = 1_000_000

    def __post_init__(self) -> None:
        if (self.iters is None) == (self.seconds is None):
            raise InvedgeError(
                "--iters and --seconds were both given",
                "Measure either by count (--iters) or by time (--seconds)",
            )
        WARMUP_CALLS.check(self.warmup_iters)
        WARMUP_SECONDS.check(self.warmup_seconds)
        if self.iters is not None:
            BENCH_ITERS.check(self.iters)
        if self.seconds is not None:
            BENCH_SECONDS.check(self.seconds)

    @classmethod
    def from_options(
        cls, warmup: str = DEFAULT_WARMUP, iters: int | None = None, seconds: float | None = None
    ) -> TimingPlan:
        """`warmup` is a count ("10") or a duration ("2s", "500ms"); default measurement: 3 s."""
        count, duration = parse_warmup(warmup)
        if iters is None and seconds is None:
            seconds = DEFAULT_SECONDS
        return cls(warmup_iters=count, warmup_seconds=duration, iters=iters, seconds=seconds)

    def describe(self) -> str:
        warm = f"{self.warmup_iters} calls" + (
            f" and ≥ {self.warmup_seconds:g} s" if self.warmup_seconds else ""
        )
        measured = (
            f"{self.iters} calls"
            if self.iters is not None
            else f"{self.seconds:g} s (≥ {self.min_iters} calls)"
        )
        return f"warm-up {warm}, then {measured}"


def parse_warmup(text: str) -> tuple[int, float]:
    """'10' → (10, 0.0); '2s' → (0, 2.0); '500ms' → (0, 0.5)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|ms)?\s*", str(text))
    if not match:
        raise InvedgeError(f"Invalid --warmup {text!r}. Use a count (10) or a duration (2s, 500ms)")
    value, unit = match.groups()
    if unit is None:
        if "." in value:
            raise InvedgeError(
                f"Invalid --warmup {text!r}: a count is a whole number (or add 's' for seconds)"
            )
        return int(value), 0.0
    return 0, float(value) / (1000.0 if unit == "ms" else 1.0)


@dataclass(frozen=True)
class Timing:
    """One iteration's times in milliseconds (None: not measured by this backend)."""

    infer_ms: float
    e2e_ms: float | None = None
    device_ms: float | None = None


@dataclass
class Measurement:
    """Every sample of the measured iterations; warm-up calls are counted but never sampled."""

    infer_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    device_ms: list[float] = field(default_factory=list)
    warmup_count: int = 0
    measured_seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.infer_ms)

    def stats(self) -> dict[str, LatencyStats | None]:
        """`infer`, `e2e`, `device` statistics; None where a kind was not measured on every call."""
        out: dict[str, LatencyStats | None] = {}
        for kind in ("infer", "e2e", "device"):
            samples = getattr(self, f"{kind}_ms")
            out[kind] = LatencyStats.from_samples(samples) if samples and len(samples) == self.count else None
        return out


def measure(
    iteration: Callable[[int], Timing], plan: TimingPlan, clock: Clock = time.perf_counter
) -> Measurement:
    """Warm up, then call `iteration(i)` per the plan, collecting every sample."""
    result = Measurement()
    start = clock()
    i = 0
    while i < plan.warmup_iters or clock() - start < plan.warmup_seconds:
        iteration(i)
        i += 1
    result.warmup_count = i

    start = clock()
    n = 0
    while n < plan.max_iters:
        if plan.iters is not None:
            if n >= plan.iters:
                break
        elif n >= plan.min_iters and clock() - start >= plan.seconds:  # type: ignore[operator]
            break
        timing = iteration(i + n)
        result.infer_ms.append(timing.infer_ms)
        if timing.e2e_ms is not None:
            result.e2e_ms.append(timing.e2e_ms)
        if timing.device_ms is not None:
            result.device_ms.append(timing.device_ms)
        n += 1
    result.measured_seconds = clock() - start
    return result


def device_ms(backend: Backend) -> float | None:
    """CUDA-event time of the backend's last call (copies excluded), if the backend records one."""
    last = getattr(backend, "last_device_ms", None)
    if not callable(last):
        return None
    value = last()
    return None if value is None else float(value)


def backend_iteration(
    backend: Backend,
    batches: Sequence[Any],
    preprocess: Callable[[Any], np.ndarray],
    clock: Clock = time.perf_counter,
) -> Callable[[int], Timing]:
    """An iteration that preprocesses batch `i mod len(batches)`, runs it and waits for the device.

    Every runtime gets the same batches and the same `preprocess`, so the comparison is fair.
    """
    if not batches:
        raise ValueError("no batches to time")

    def one(i: int) -> Timing:
        raw = batches[i % len(batches)]
        t0 = clock()
        x = preprocess(raw)
        t1 = clock()
        backend.infer(x)
        backend.synchronize()
        t2 = clock()
        return Timing(infer_ms=(t2 - t1) * 1e3, e2e_ms=(t2 - t0) * 1e3, device_ms=device_ms(backend))

    return one


def time_first_call(
    backend: Backend, batch: Any, preprocess: Callable[[Any], np.ndarray], clock: Clock = time.perf_counter
) -> tuple[float, np.ndarray]:
    """The first inference at a batch shape (allocations, kernel selection): ms and the output."""
    x = preprocess(batch)
    t0 = clock()
    out = backend.infer(x)
    backend.synchronize()
    return (clock() - t0) * 1e3, out


def timed_call(call: Callable[[], object], clock: Clock = time.perf_counter) -> Callable[[int], Timing]:
    """An iteration that times `call()` alone (e.g. a device-resident run, copies excluded)."""

    def one(i: int) -> Timing:
        t0 = clock()
        call()
        return Timing(infer_ms=(clock() - t0) * 1e3)

    return one
