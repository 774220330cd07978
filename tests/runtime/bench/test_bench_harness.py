"""The timing harness's bookkeeping, on a fake backend driven by a fake clock (known delays).

Only one test uses real time, and it asserts the unit (milliseconds: at least the 1 ms sleep), never
an upper bound.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.bench.harness import (
    Timing,
    TimingPlan,
    backend_iteration,
    measure,
    parse_warmup,
    time_first_call,
)
from invspread_edge_runtime.bench.stats import LatencyStats, throughput
from invspread_edge_runtime.errors import InvedgeError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeBackend(Backend):
    """Each call 'takes' the next delay (seconds) on the fake clock; optionally reports device time."""

    def __init__(self, clock: FakeClock, delays: list[float], device_fraction: float | None = None) -> None:
        self.info = BackendInfo("fake", "cpu", "fp32", "fake.onnx")
        self.clock, self.delays, self.calls = clock, delays, 0
        self.device_fraction = device_fraction
        self.synced = 0
        self._last = 0.0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._last = self.delays[self.calls % len(self.delays)]
        self.clock.now += self._last
        self.calls += 1
        return np.zeros((len(batch), 4), dtype=np.float32)

    def synchronize(self) -> None:
        self.synced += 1

    def last_device_ms(self) -> float | None:
        return None if self.device_fraction is None else self._last * 1e3 * self.device_fraction


def fake_preprocess(clock: FakeClock, seconds: float):
    def pre(raw: np.ndarray) -> np.ndarray:
        clock.now += seconds
        return raw

    return pre


def test_count_plan_excludes_warmup_and_keeps_every_sample():
    clock = FakeClock()
    # 3 slow warm-up calls (1 s each), then 10 measured calls of 1..10 ms
    delays = [1.0, 1.0, 1.0] + [k / 1000 for k in range(1, 11)]
    backend = FakeBackend(clock, delays)
    step = backend_iteration(backend, [np.zeros((2, 3, 4, 4))], fake_preprocess(clock, 0.5e-3), clock=clock)
    result = measure(step, TimingPlan(warmup_iters=3, iters=10, seconds=None), clock=clock)

    assert result.warmup_count == 3
    assert result.count == 10 and backend.calls == 13 and backend.synced == 13
    np.testing.assert_allclose(result.infer_ms, np.arange(1, 11), atol=1e-6)  # warm-up's 1000 ms absent
    np.testing.assert_allclose(np.array(result.e2e_ms) - np.array(result.infer_ms), 0.5, atol=1e-6)
    assert result.device_ms == []
    stats = result.stats()
    assert stats["device"] is None
    infer = stats["infer"]
    assert infer.count == 10 and infer.min == pytest.approx(1) and infer.max == pytest.approx(10)
    assert infer.p50 == pytest.approx(5.5) and infer.mean == pytest.approx(5.5)
    assert infer.p50 <= infer.p90 <= infer.p99 <= infer.max
    assert stats["e2e"].p50 == pytest.approx(6.0)


def test_time_plan_stops_after_duration():
    clock = FakeClock()
    backend = FakeBackend(clock, [0.25])  # every call 250 ms
    step = backend_iteration(backend, [np.zeros((1, 3, 4, 4))], lambda x: x, clock=clock)
    result = measure(step, TimingPlan(warmup_iters=2, iters=None, seconds=1.0, min_iters=1), clock=clock)
    assert result.warmup_count == 2
    assert result.count == 4  # 4 × 0.25 s reaches 1 s
    assert result.measured_seconds == pytest.approx(1.0)


def test_time_plan_keeps_min_iters_when_calls_are_slow():
    clock = FakeClock()
    backend = FakeBackend(clock, [5.0])
    step = backend_iteration(backend, [np.zeros((1, 3, 4, 4))], lambda x: x, clock=clock)
    result = measure(step, TimingPlan(warmup_iters=0, iters=None, seconds=1.0, min_iters=3), clock=clock)
    assert result.warmup_count == 0 and result.count == 3


@pytest.mark.parametrize(("warmup_iters", "expected"), [(0, 4), (2, 4), (6, 6)])
def test_warmup_by_time_and_count_both_hold(warmup_iters, expected):
    clock = FakeClock()
    backend = FakeBackend(clock, [0.25])
    step = backend_iteration(backend, [np.zeros((1, 3, 4, 4))], lambda x: x, clock=clock)
    plan = TimingPlan(warmup_iters=warmup_iters, warmup_seconds=1.0, iters=2, seconds=None)
    result = measure(step, plan, clock=clock)
    assert result.warmup_count == expected
    assert result.count == 2 and backend.calls == expected + 2


def test_device_time_collected_when_backend_records_it():
    clock = FakeClock()
    backend = FakeBackend(clock, [0.002, 0.004], device_fraction=0.5)
    step = backend_iteration(backend, [np.zeros((1, 3, 4, 4))], lambda x: x, clock=clock)
    result = measure(step, TimingPlan(warmup_iters=0, iters=4, seconds=None), clock=clock)
    np.testing.assert_allclose(result.device_ms, [1, 2, 1, 2], atol=1e-9)
    stats = result.stats()
    assert stats["device"] is not None and stats["device"].mean == pytest.approx(1.5)
    assert all(d <= w for d, w in zip(result.device_ms, result.infer_ms, strict=True))


def test_batches_cycle_in_order():
    seen: list[int] = []
    clock = FakeClock()
    backend = FakeBackend(clock, [0.001])
    batches = [np.full((1, 1), k) for k in range(3)]

    def pre(raw: np.ndarray) -> np.ndarray:
        seen.append(int(raw[0, 0]))
        return raw

    measure(backend_iteration(backend, batches, pre, clock=clock), TimingPlan(1, 0.0, 5, None), clock=clock)
    assert seen == [0, 1, 2, 0, 1, 2]


def test_first_call_timed_separately():
    clock = FakeClock()
    backend = FakeBackend(clock, [2.0])
    ms, out = time_first_call(backend, np.zeros((3, 3, 4, 4)), fake_preprocess(clock, 1.0), clock=clock)
    assert ms == pytest.approx(2000.0)  # preprocessing not included
    assert out.shape == (3, 4) and backend.calls == 1


def test_real_clock_samples_are_milliseconds():
    class Sleepy(FakeBackend):
        def infer(self, batch):
            time.sleep(0.001)
            return super().infer(batch)

    backend = Sleepy(FakeClock(), [0.0])
    step = backend_iteration(backend, [np.zeros((4, 3, 8, 8), np.float32)], lambda x: x * 2)
    result = measure(step, TimingPlan(warmup_iters=2, iters=20, seconds=None))
    assert result.count == 20 and backend.calls == 22
    assert min(result.infer_ms) > 0.99 and min(result.e2e_ms) > 0.99  # each call sleeps 1 ms (not 0.001: s)


def test_latency_stats_from_known_samples():
    s = LatencyStats.from_samples(np.arange(1, 101, dtype=float))
    assert (s.count, s.p50, s.p90, s.p99) == (
        100,
        pytest.approx(50.5),
        pytest.approx(90.1),
        pytest.approx(99.01),
    )
    assert s.mean == pytest.approx(50.5) and s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert LatencyStats.from_samples([3.0]).std == 0.0
    assert set(s.as_dict(prefix="e2e_")) >= {"e2e_count", "e2e_p50_ms", "e2e_std_ms"}
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
    assert throughput(64, 32.0) == pytest.approx(2000.0)


@pytest.mark.parametrize(
    ("text", "parsed"), [("10", (10, 0.0)), ("2s", (0, 2.0)), ("500ms", (0, 0.5)), ("0", (0, 0.0))]
)
def test_parse_warmup(text, parsed):
    assert parse_warmup(text) == parsed


@pytest.mark.parametrize("text", ["abc", "1.5", "-3", "2 min"])
def test_parse_warmup_rejects(text):
    with pytest.raises(InvedgeError):
        parse_warmup(text)


def test_plan_needs_exactly_one_measure_mode():
    with pytest.raises(InvedgeError):
        TimingPlan(iters=10, seconds=1.0)
    with pytest.raises(InvedgeError):
        TimingPlan(iters=0, seconds=None)
    assert TimingPlan.from_options("3").seconds == 3.0
    assert TimingPlan.from_options("2s", iters=7).iters == 7
    assert "7 calls" in TimingPlan.from_options("2s", iters=7).describe()


def test_timing_defaults():
    assert Timing(1.0).e2e_ms is None and Timing(1.0).device_ms is None
