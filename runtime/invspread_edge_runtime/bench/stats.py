"""Latency statistics from every sample: percentiles are never averages of averages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one set of latency samples, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float  # sample standard deviation (ddof=1; 0 for a single sample)
    min: float
    max: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.ndim != 1 or len(x) == 0:
            raise ValueError("latency statistics need at least one sample")
        p50, p90, p99 = np.percentile(x, [50, 90, 99])  # linear interpolation: monotone in q
        return cls(
            count=len(x),
            p50=float(p50),
            p90=float(p90),
            p99=float(p99),
            mean=float(x.mean()),
            std=float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            min=float(x.min()),
            max=float(x.max()),
        )

    def as_dict(self, prefix: str = "", suffix: str = "_ms") -> dict[str, float | int]:
        """Flat keys for a report row: `p50_ms`, `e2e_p50_ms`, ... (`count` stays unsuffixed)."""
        return {
            (f"{prefix}{key}" if key == "count" else f"{prefix}{key}{suffix}"): value
            for key, value in asdict(self).items()
        }


def throughput(batch: int, mean_ms: float) -> float:
    """Images per second at a mean latency per batch: batch / mean."""
    return batch * 1000.0 / mean_ms if mean_ms > 0 else float("inf")
