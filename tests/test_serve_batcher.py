"""The dynamic batcher and readiness on a real ONNX Runtime engine: bounded queue, timeouts, exact split, drain.

A gate in front of the real runner holds a batch in the runner, so the queue fills deterministically
(the engine itself runs in well under a millisecond).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("prometheus_client", reason="the serve extra is not installed")
from serving import build_engine  # noqa: E402

import trtopt  # noqa: E402
from trtopt.backends.base import Runner  # noqa: E402
from trtopt.serve.batcher import DynamicBatcher, PendingRequest  # noqa: E402
from trtopt.serve.errors import Unavailable  # noqa: E402
from trtopt.serve.metrics import ModelStats, ServeMetrics  # noqa: E402
from trtopt.serve.models import ModelRepository  # noqa: E402
from trtopt.serve.settings import BatchingSettings, ServerSettings  # noqa: E402
from trtopt.serve.state import ServerState  # noqa: E402


class GatedRunner(Runner):
    """The real engine's runner, but each run first waits for the test to open the gate."""

    def __init__(self, inner: Runner) -> None:
        self.inner, self.gate, self.running = inner, threading.Event(), threading.Event()
        self._inputs, self._outputs = inner.inputs, inner.outputs
        self.batches: list[int] = []

    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.running.set()
        self.gate.wait(30)
        self.batches.append(len(feed["input"]))
        return self.inner.infer(feed)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("batcher"))


@pytest.fixture
def runner(engine: Path):
    with trtopt.load(engine, threads=1) as inner:
        yield GatedRunner(inner)


def batcher(runner: GatedRunner, **settings: Any) -> tuple[DynamicBatcher, ModelStats]:
    stats = ModelStats(ServeMetrics(), "convnet", "1")
    return DynamicBatcher("convnet", [runner], BatchingSettings(**settings), stats), stats


def request(rows: int, seed: int, timeout_s: float = 60.0) -> PendingRequest:
    x = np.random.default_rng(seed).standard_normal((rows, 3, 16, 16)).astype(np.float32)
    return PendingRequest({"input": x}, rows, (3, 16, 16), deadline=time.monotonic() + timeout_s)


def occupy(queue: DynamicBatcher, runner: GatedRunner) -> Future:
    """Put one request into the runner (held at the gate), so later ones stay queued."""
    future = queue.submit(request(1, seed=0))
    assert runner.running.wait(10)
    return future


def test_full_queue_refuses_at_once_and_queued_requests_still_complete(runner):
    queue, _ = batcher(runner, max_batch_size=1, max_queue_size=2)
    first = occupy(queue, runner)
    queued = [queue.submit(request(1, seed=i)) for i in (1, 2)]
    started = time.perf_counter()
    with pytest.raises(Unavailable, match="overloaded: 2 requests queued"):
        queue.submit(request(1, seed=3))
    assert time.perf_counter() - started < 0.05, "an overflow must be refused without waiting"
    runner.gate.set()
    assert all(f.result(10)["logits"].shape == (1, 10) for f in [first, *queued])
    queue.stop()


def test_request_whose_timeout_passes_in_the_queue_gets_503_unrun(runner):
    queue, stats = batcher(runner, max_batch_size=8)
    first = occupy(queue, runner)
    late = queue.submit(request(1, seed=1, timeout_s=0.05))
    time.sleep(0.1)
    runner.gate.set()
    with pytest.raises(Unavailable, match="timed out after"):
        late.result(10)
    assert first.result(10)["logits"].shape == (1, 10)
    queue.stop()
    assert runner.batches == [1] and stats.to_json()["inference_stats"]["fail"]["count"] == 1


def test_requests_of_different_sizes_are_concatenated_and_split_back_exactly(runner):
    queue, stats = batcher(runner, max_batch_size=8)
    occupy(queue, runner)
    pending = [request(rows, seed=10 + rows) for rows in (1, 2, 3)]
    futures = [queue.submit(p) for p in pending]
    runner.gate.set()
    results = [f.result(10)["logits"] for f in futures]
    queue.stop()
    assert runner.batches == [1, 6], "the three queued requests must run as one batch of 6 rows"
    together = runner.inner.infer({"input": np.concatenate([p.feed["input"] for p in pending])})["logits"]
    np.testing.assert_array_equal(np.concatenate(results), together)
    assert [r.shape[0] for r in results] == [1, 2, 3]
    assert {b["batch_size"] for b in stats.to_json()["batch_stats"]} == {1, 6}


def test_batch_stops_growing_at_max_batch_size(runner):
    queue, _ = batcher(runner, max_batch_size=4)
    occupy(queue, runner)
    futures = [queue.submit(request(rows, seed=20 + i)) for i, rows in enumerate((3, 2, 1))]
    runner.gate.set()
    for future in futures:
        future.result(10)
    queue.stop()
    assert runner.batches == [1, 4, 2], "3+1 rows fit in 4 (the 2-row request is skipped, not split), then 2"


def test_stop_finishes_queued_requests_and_refuses_new_ones(runner):
    queue, _ = batcher(runner, max_batch_size=2)
    futures = [occupy(queue, runner), *(queue.submit(request(1, seed=i)) for i in range(1, 5))]
    stopper = threading.Thread(target=queue.stop)
    stopper.start()
    time.sleep(0.05)
    with pytest.raises(Unavailable, match="shutting down"):
        queue.submit(request(1, seed=9))
    runner.gate.set()
    stopper.join(10)
    assert not stopper.is_alive() and all(f.done() and f.exception() is None for f in futures)


def test_ready_only_after_every_model_loaded_and_warmed_up_and_not_while_draining(engine):
    settings = ServerSettings(defaults=BatchingSettings(instances=2, threads=1))
    metrics = ServeMetrics()
    state = ServerState(ModelRepository({"a": engine, "b": engine}, settings, metrics), metrics, settings)
    assert state.live and not state.ready
    with pytest.raises(Unavailable, match="not ready"):
        state.repository.get("a").require_ready()
    state.repository.load_all()
    assert state.ready and state.repository.load_error is None
    state.draining = True
    assert not state.ready
    state.repository.close()
    assert not state.repository.get("a").ready


def test_a_scalar_input_reaches_the_runner_as_a_scalar(tmp_path):
    """A rank-0 input (a sample rate, a threshold) stays rank 0 through validation (no batch axis, no batching)."""
    import onnx
    from onnx import TensorProto, helper

    from trtopt.serve.codec import InferenceRequest

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "scaled",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "scaled.onnx")
    np.savez(tmp_path / "data.npz", x=np.ones((4, 4), np.float32), scale=np.float32(2))
    built = trtopt.build(
        tmp_path / "scaled.onnx", engines_dir=tmp_path / "engines", val_data=str(tmp_path / "data.npz"), threads=1
    )
    settings, metrics = ServerSettings(), ServeMetrics()
    repository = ModelRepository({"scaled": Path(built.engine_dir)}, settings, metrics)
    repository.load_all()
    assert repository.load_error is None
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = InferenceRequest({"x": x, "scale": np.array(3, np.float32)}, {}, None)
    try:
        np.testing.assert_array_equal(repository.get("scaled").submit(request).result(10)["y"], x * 3)
    finally:
        repository.close()
