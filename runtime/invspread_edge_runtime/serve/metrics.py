"""The service's Prometheus metrics, in a registry of its own (two services in one process never clash).

Names as Prometheus asks: base units in the name, `_total` for counters. An operator reads load
and latency from /metrics alone: requests by endpoint and status, latency histograms, batch sizes,
images waiting for the backend, gallery size.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "invedge_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "invedge_request_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "invedge_batch_size", "Images per backend call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge(
            "invedge_queue_depth", "Images waiting for the backend", registry=self.registry
        )
        self.queue_depth.set_function(queue_depth)
        self.gallery_items = Gauge(
            "invedge_gallery_items", "Items in the served gallery", registry=self.registry
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
