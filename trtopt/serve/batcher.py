"""Dynamic batching with Triton's semantics over a pool of runners ("instances").

Requests wait in one bounded FIFO per model. Each instance is a thread owning one runner; when
free, it takes the oldest request and adds later ones whose non-batch shapes match, until the
batch reaches the largest ``preferred_batch_size`` (else ``max_batch_size``) or the oldest request
has waited ``max_queue_delay_microseconds``. The inputs are concatenated along axis 0, run once,
and the outputs split back by each request's row count. A full queue refuses at once (503) instead
of growing; a request whose timeout passes while queued is answered 503 without running.
Shape checks happen before a request is queued, so one bad request never fails a batch.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from trtopt.backends.base import Runner
from trtopt.errors import UsageError
from trtopt.serve.errors import BadRequest, ServeError, Unavailable
from trtopt.serve.settings import BatchingSettings

Outputs = dict[str, np.ndarray]


class BatchObserver(Protocol):
    """Receives what the batcher measured (metrics and the statistics endpoint)."""

    def request_done(self, ok: bool, rows: int, queue_s: float, total_s: float) -> None: ...

    def batch_done(self, size: int, compute_s: float) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


@dataclass(eq=False)  # identity: the queue removes this very request, never compares feeds
class PendingRequest:
    """One request's feed, its row count along axis 0, and what it may share a batch with."""

    feed: dict[str, np.ndarray]
    rows: int
    signature: Hashable  # requests share a batch only when their non-batch shapes are equal
    deadline: float  # time.monotonic() after which it is refused unrun
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Outputs] = field(default_factory=Future)


class DynamicBatcher:
    """Queue + instance threads for one model; `submit()` returns a Future of that request's outputs."""

    def __init__(
        self, model: str, runners: Sequence[Runner], settings: BatchingSettings, observer: BatchObserver
    ) -> None:
        self.model = model
        self._settings = settings
        self._observer = observer
        self._queue: collections.deque[PendingRequest] = collections.deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._forming = False
        self._batching = (settings.max_batch_size or 0) > 0
        self._threads = [
            threading.Thread(target=self._serve, args=(runner,), name=f"{model}-instance-{i}", daemon=True)
            for i, runner in enumerate(runners)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, request: PendingRequest) -> Future[Outputs]:
        """Queue a validated request, or raise Unavailable at once when the queue is full or closing."""
        with self._lock:
            if self._stopping:
                raise Unavailable(f"model {self.model!r} is shutting down")
            if len(self._queue) >= self._settings.max_queue_size:
                raise Unavailable(
                    f"model {self.model!r} is overloaded: {len(self._queue)} requests queued "
                    f"(max_queue_size {self._settings.max_queue_size}); retry later"
                )
            self._queue.append(request)
            self._observer.queue_depth(len(self._queue))
            self._lock.notify_all()
        return request.future

    def stop(self) -> None:
        """Refuse new requests, finish every queued one, then end the instance threads."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()

    def _serve(self, runner: Runner) -> None:
        while (batch := self._take_batch()) is not None:
            self._run(runner, batch)

    def _expire(self, now: float) -> None:
        """Answer 503 to queued requests whose timeout passed (lock held)."""
        for request in [r for r in self._queue if r.deadline <= now]:
            self._queue.remove(request)
            waited_ms = (now - request.enqueued) * 1e3
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(
                    Unavailable(f"model {self.model!r}: request timed out after {waited_ms:.0f} ms in the queue")
                )
            self._observer.request_done(False, request.rows, now - request.enqueued, now - request.enqueued)

    def _take_batch(self) -> list[PendingRequest] | None:
        """Block until a batch is due; None once stopping and the queue is empty."""
        settings = self._settings
        with self._lock:
            while True:
                self._expire(time.monotonic())
                if self._queue and not self._forming:
                    break
                if self._stopping and not self._queue:
                    return None
                self._lock.wait()
            self._forming = True  # one batch forms at a time, as in Triton's scheduler; free instances wait
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            if self._batching:
                limit = int(settings.max_batch_size or 1)
                target = max(settings.preferred_batch_size, default=limit)
                flush_at = first.enqueued + settings.max_queue_delay_microseconds / 1e6
                while rows < target:
                    self._expire(time.monotonic())
                    for request in list(self._queue):
                        if request.signature == first.signature and rows + request.rows <= limit:
                            self._queue.remove(request)
                            batch.append(request)
                            rows += request.rows
                            if rows >= target:
                                break
                    remaining = flush_at - time.monotonic()
                    if rows >= target or self._stopping or remaining <= 0:
                        break
                    self._lock.wait(remaining)
            self._forming = False
            self._lock.notify_all()
            self._observer.queue_depth(len(self._queue))
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _run(self, runner: Runner, batch: list[PendingRequest]) -> None:
        if not batch:
            return
        started = time.monotonic()
        error: ServeError | None = None
        try:
            outputs = runner.infer(batch[0].feed if len(batch) == 1 else concatenate([r.feed for r in batch]))
            parts = split(outputs, [r.rows for r in batch]) if len(batch) > 1 else [outputs]
        except UsageError as exc:  # validation let through what the runner refuses: the request's fault
            parts, error = [], BadRequest(f"model {self.model!r}: {exc}")
        except Exception as exc:  # noqa: BLE001 - the backend failed; every request of the batch hears why
            parts, error = [], ServeError(f"model {self.model!r} failed to run: {type(exc).__name__}: {exc}")
        finished = time.monotonic()
        self._observer.batch_done(sum(r.rows for r in batch), finished - started)
        for index, request in enumerate(batch):
            if error is None:
                request.future.set_result(parts[index])
            else:
                request.future.set_exception(error)
            self._observer.request_done(
                error is None, request.rows, started - request.enqueued, finished - request.enqueued
            )


def concatenate(feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feed holding every request's rows, in order, along axis 0."""
    return {name: np.concatenate([feed[name] for feed in feeds], axis=0) for name in feeds[0]}


def split(outputs: Outputs, rows: Sequence[int]) -> list[Outputs]:
    """Cut each output back into per-request parts of `rows` rows (copies: parts outlive the batch)."""
    total = sum(rows)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ServeError(
                f"output {name!r} has shape {list(value.shape)}, not {total} rows along axis 0; "
                "this engine cannot be batched (serve it with max_batch_size = 1)"
            )
    bounds = np.cumsum([0, *rows])
    return [
        {name: value[start:end].copy() for name, value in outputs.items()}
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
