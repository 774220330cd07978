"""Latency, throughput and accuracy of one model across runtimes, without torch.

- `harness`: warm-up and measured iterations, every sample kept (wall and CUDA-event times);
- `stats`: percentiles, mean, std from all samples;
- `environment`: the machine a figure came from (CPU, GPU, driver, CUDA, versions, threads, Jetson power);
- `registry`: the runtimes by name; the full toolkit registers its torch runtimes here;
- `target`, `images`, `runner`: what is measured, on which images, one row per runtime × precision × batch;
- `report`: the rich table, JSON records, markdown and the latency-vs-batch plot.

Python: `run_bench(resolve_target("runs/fmnist"), load_bench_images("fashion-mnist", 1000), BenchSettings())`.
"""

from __future__ import annotations

from .harness import Measurement, Timing, TimingPlan, measure
from .registry import NotPresent, register_runtime, runtimes, unregister_runtime
from .stats import LatencyStats

__all__ = [
    "LatencyStats",
    "Measurement",
    "NotPresent",
    "Timing",
    "TimingPlan",
    "measure",
    "register_runtime",
    "runtimes",
    "unregister_runtime",
]
