"""Load scenarios after MLPerf LoadGen: single-stream, offline, server, and N concurrent callers.

Like LoadGen, the load generator knows nothing about the model. It sees a thin *system under test*
(``issue(query)`` runs one query to completion) and a *query library* (``query(batch_size, index)``
returns a prepared feed, so no input is built inside a timed region). Each caller gets its own
system under test: a backend whose runner is not thread-safe is never shared between threads.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trtopt.bench.stability import Measurement, StabilityPolicy, Window, repeat_until_stable
from trtopt.bench.stats import LatencyStats, thin_samples

SINGLE_STREAM = "single-stream"
OFFLINE = "offline"
SERVER = "server"
CONCURRENCY = "concurrency"
ALL_SCENARIOS = (SINGLE_STREAM, OFFLINE, SERVER, CONCURRENCY)


class SystemUnderTest(Protocol):
    def issue(self, query: Mapping[str, np.ndarray]) -> None:
        """Run one query to completion (results are discarded by the load generator)."""


class QueryLibrary(Protocol):
    def query(self, batch_size: int, index: int) -> Mapping[str, np.ndarray]:
        """A prepared feed of `batch_size` samples; `index` cycles through the pool."""


def _closed_loop(sut: SystemUnderTest, library: QueryLibrary, batch_size: int, seconds: float) -> Window:
    """Issue queries back to back for `seconds` (at least one), timing each."""
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    index = 0
    while True:
        feed = library.query(batch_size, index)
        t0 = clock()
        sut.issue(feed)
        t1 = clock()
        latencies.append(t1 - t0)
        index += 1
        if t1 >= deadline:
            break
    return Window(latencies, index * batch_size, clock() - start)


def _stdev(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _measurement_json(measurement: Measurement, policy: StabilityPolicy, batch_size: int) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "latency_ms": LatencyStats.from_seconds(measurement.latencies_s).to_json(),
        "throughput_sps": measurement.throughput,
        "median_spread_ms": _stdev(measurement.window_medians_s) * 1e3,
        "throughput_spread": _stdev(measurement.window_throughputs),
        "best_window_median_ms": min(measurement.window_medians_s) * 1e3,
        "best_window_throughput_sps": max(measurement.window_throughputs),
        "iterations": int(measurement.latencies_s.size),
        "stability": measurement.stability_json(policy),
        "samples_ms": thin_samples(measurement.latencies_s),
    }


def single_stream(sut: SystemUnderTest, library: QueryLibrary, policy: StabilityPolicy) -> dict[str, Any]:
    """One query of one sample at a time: the latency a single user sees."""
    measurement = repeat_until_stable(lambda seconds: _closed_loop(sut, library, 1, seconds), policy)
    return _measurement_json(measurement, policy, 1)


def offline(sut: SystemUnderTest, library: QueryLibrary, batch_sizes: Sequence[int],
            policy: StabilityPolicy) -> dict[str, Any]:
    """Throughput when all samples are available at once, swept over batch sizes."""
    results = []
    for batch_size in batch_sizes:
        measurement = repeat_until_stable(lambda seconds, b=batch_size: _closed_loop(sut, library, b, seconds), policy)
        results.append(_measurement_json(measurement, policy, batch_size))
    return {"batches": results}


def concurrency(suts: Sequence[SystemUnderTest], library: QueryLibrary, policy: StabilityPolicy) -> dict[str, Any]:
    """N callers issuing single-sample queries back to back, each through its own runner."""

    def run_window(seconds: float) -> Window:
        windows: list[Window | None] = [None] * len(suts)
        barrier = threading.Barrier(len(suts) + 1)

        def caller(slot: int) -> None:
            barrier.wait()
            windows[slot] = _closed_loop(suts[slot], library, 1, seconds)

        threads = [threading.Thread(target=caller, args=(slot,), daemon=True) for slot in range(len(suts))]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        done = [w for w in windows if w is not None]
        if len(done) != len(suts):
            raise RuntimeError("a concurrent caller failed; rerun with --concurrency 1 to see its error")
        return Window([lat for w in done for lat in w.latencies_s], sum(w.samples for w in done), elapsed)

    result = _measurement_json(repeat_until_stable(run_window, policy), policy, 1)
    result["callers"] = len(suts)
    return result


def poisson_arrivals(qps: float, duration_s: float, seed: int) -> np.ndarray:
    """Arrival offsets (s) of a Poisson process at rate `qps`, conditioned on round(qps*duration) events.

    Given its event count, a Poisson process's arrival times are sorted uniform draws over the
    window; fixing the count makes the offered load exactly `qps` while inter-arrival gaps stay
    exponential. The same seed gives the same arrival times.
    """
    count = max(1, int(round(qps * duration_s)))
    return np.sort(np.random.default_rng(seed).uniform(0.0, duration_s, count))


@dataclass
class _ServerRecord:
    latency: np.ndarray  # completion - scheduled arrival: includes queueing
    service: np.ndarray  # completion - start of service
    completion: np.ndarray  # seconds after the scheduled start
    issue_delay: np.ndarray  # actual enqueue - scheduled arrival (load generator lag)


def server(suts: Sequence[SystemUnderTest], library: QueryLibrary, qps: float, duration_s: float,
           seed: int, warmup_s: float = 0.2) -> dict[str, Any]:
    """Seeded Poisson arrivals at `qps` for `duration_s`, served by one worker per system under test."""
    for sut in suts:
        _closed_loop(sut, library, 1, warmup_s)
    arrivals = poisson_arrivals(qps, duration_s, seed)
    count = arrivals.size
    record = _ServerRecord(*(np.full(count, np.nan) for _ in range(4)))
    pending: queue.Queue[int | None] = queue.Queue()
    clock = time.perf_counter
    errors: list[BaseException] = []
    start = clock() + 0.01

    def worker(sut: SystemUnderTest) -> None:
        while (index := pending.get()) is not None:
            try:
                begin = clock()
                sut.issue(library.query(1, index))
                end = clock()
            except BaseException as exc:  # noqa: BLE001 - surfaced in the caller's thread below
                errors.append(exc)
                return
            record.latency[index] = end - (start + arrivals[index])
            record.service[index] = end - begin
            record.completion[index] = end - start

    threads = [threading.Thread(target=worker, args=(sut,), daemon=True) for sut in suts]
    for thread in threads:
        thread.start()
    for index, offset in enumerate(arrivals):
        wait = start + offset - clock()
        if wait > 0:
            time.sleep(wait)
        record.issue_delay[index] = clock() - (start + offset)
        pending.put(index)
    for _ in threads:
        pending.put(None)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    span = float(np.nanmax(record.completion))
    return {
        "target_qps": qps,
        "duration_s": duration_s,
        "seed": seed,
        "workers": len(suts),
        "issued": int(count),
        "completed": int(np.count_nonzero(~np.isnan(record.completion))),
        "achieved_qps": count / span if span > 0 else 0.0,
        "latency_ms": LatencyStats.from_seconds(record.latency).to_json(),
        "service_ms": LatencyStats.from_seconds(record.service).to_json(),
        "issue_delay_ms": LatencyStats.from_seconds(record.issue_delay).to_json(),
        "samples_ms": thin_samples(record.latency),
        "arrival_schedule_sha256": hashlib.sha256(arrivals.tobytes()).hexdigest(),
    }
