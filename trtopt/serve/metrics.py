"""Prometheus metrics and Triton's per-model statistics, fed by the batchers.

One `ServeMetrics` per server (its own registry, served on the metrics port); one `ModelStats` per
model, which is the batcher's observer: every number the statistics endpoint reports is counted
once, here, and mirrored into the Prometheus families.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The metric families of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter(
            "trtopt_inference_requests",
            "Inference requests answered, by outcome",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "trtopt_inference_rejected",
            "Requests refused before queueing (bad input, overload)",
            ["model", "status"],
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "trtopt_inference_queue_seconds",
            "Time from queueing to the start of the batch",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "trtopt_inference_compute_seconds",
            "Time one batch ran in the runner",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "trtopt_inference_request_seconds",
            "Time from queueing to the answer",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "trtopt_inference_batch_size",
            "Rows per executed batch",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "trtopt_inference_queue_depth", "Requests waiting in the queue", labels, registry=self.registry
        )
        self.in_flight = Gauge(
            "trtopt_inference_in_flight", "Requests received and not yet answered", ["protocol"], registry=self.registry
        )


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class ModelStats:
    """Counters of one model version (Triton's statistics extension) and its Prometheus series."""

    def __init__(self, metrics: ServeMetrics, model: str, version: str) -> None:
        self.model, self.version = model, version
        self._metrics = metrics
        self._lock = threading.Lock()
        self._success, self._fail, self._queue, self._compute = _Duration(), _Duration(), _Duration(), _Duration()
        self._inferences = 0
        self._executions = 0
        self._last_ms = 0
        self._batches: dict[int, _Duration] = {}

    def request_done(self, ok: bool, rows: int, queue_s: float, total_s: float) -> None:
        """One answered request; Triton counts inferences in rows (a 4-row request is 4)."""
        with self._lock:
            (self._success if ok else self._fail).add(total_s)
            if ok:
                self._queue.add(queue_s)
                self._inferences += rows
                self._last_ms = int(time.time() * 1e3)
        labels = (self.model, self.version)
        self._metrics.requests.labels(*labels, "success" if ok else "failure").inc()
        self._metrics.queue_seconds.labels(*labels).observe(queue_s)
        self._metrics.request_seconds.labels(*labels).observe(total_s)

    def batch_done(self, size: int, compute_s: float) -> None:
        with self._lock:
            self._executions += 1
            self._compute.add(compute_s)
            self._batches.setdefault(size, _Duration()).add(compute_s)
        self._metrics.batch_size.labels(self.model, self.version).observe(size)
        self._metrics.compute_seconds.labels(self.model, self.version).observe(compute_s)

    def queue_depth(self, depth: int) -> None:
        self._metrics.queue_depth.labels(self.model, self.version).set(depth)

    def rejected(self, status: int) -> None:
        self._metrics.rejected.labels(self.model, str(status)).inc()

    def to_json(self) -> dict[str, Any]:
        """One entry of Triton's `model_stats` list (field names of its ModelStatistics message)."""
        with self._lock:
            return {
                "name": self.model,
                "version": self.version,
                "last_inference": self._last_ms,
                "inference_count": self._inferences,
                "execution_count": self._executions,
                "inference_stats": {
                    "success": self._success.to_json(),
                    "fail": self._fail.to_json(),
                    "queue": self._queue.to_json(),
                    "compute_infer": self._compute.to_json(),
                },
                "batch_stats": [
                    {"batch_size": size, "compute_infer": duration.to_json()}
                    for size, duration in sorted(self._batches.items())
                ],
            }
