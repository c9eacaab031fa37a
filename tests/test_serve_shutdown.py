"""SIGTERM during load: every request the server accepted is answered, then it exits 0.

Requests wait ~300 ms in the batcher's queue (a long max_queue_delay and a preferred batch the load
never fills), so many are in flight when the signal arrives. Clients stop issuing new requests just
before the signal; each request sent must come back 200 with the right output.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
import tritonclient.grpc as grpcclient  # noqa: E402
from serving import build_engine  # noqa: E402

import trtopt  # noqa: E402
from trtopt.serve.launcher import ServerProcess  # noqa: E402

HTTP_CLIENTS, GRPC_CLIENTS = 4, 2  # fewer than the preferred batch of 8: every batch waits out the delay


def test_sigterm_drains_accepted_requests_and_exits_0(tmp_path: Path):
    engine = build_engine(tmp_path)
    config = tmp_path / "serve.toml"
    config.write_text("[defaults]\nthreads = 1\nmax_queue_delay_microseconds = 300000\npreferred_batch_size = [8]\n")
    server = ServerProcess.start([engine], "--config", str(config))
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with trtopt.load(engine, threads=1) as runner:
        expected = runner.infer({"input": x})["logits"]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 16, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    stop_issuing = threading.Event()
    finished: list[tuple[float, bool]] = []  # (completion time, answer correct)
    failures: list[str] = []

    def http_caller() -> None:
        host, port = server.http.rsplit(":", 1)
        while not stop_issuing.is_set():
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                connection.request(
                    "POST",
                    "/v2/models/convnet/infer",
                    body=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header)), "Connection": "close"},
                )
                response = connection.getresponse()
                body = response.read()
                length = int(response.getheader("Inference-Header-Content-Length", "0"))
                correct = response.status == 200 and np.array_equal(
                    np.frombuffer(body[length:], np.float32).reshape(1, 10), expected
                )
                finished.append((time.monotonic(), correct))
            except OSError as exc:
                failures.append(f"http: {exc!r}")
            finally:
                connection.close()

    def grpc_caller() -> None:
        client = grpcclient.InferenceServerClient(server.grpc)
        tensor = grpcclient.InferInput("input", [1, 3, 16, 16], "FP32")
        tensor.set_data_from_numpy(x)
        while not stop_issuing.is_set():
            try:
                answer = client.infer("convnet", [tensor]).as_numpy("logits")
                finished.append((time.monotonic(), np.array_equal(answer, expected)))
            except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                failures.append(f"grpc: {exc!r}")

    callers = [threading.Thread(target=http_caller) for _ in range(HTTP_CLIENTS)]
    callers += [threading.Thread(target=grpc_caller) for _ in range(GRPC_CLIENTS)]
    for caller in callers:
        caller.start()
    time.sleep(1.0)
    stop_issuing.set()
    time.sleep(0.05)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join(30)
    status = server.stop()
    assert not failures, failures[:5]
    assert finished and all(correct for _, correct in finished)
    drained = sum(1 for done, _ in finished if done > signalled)
    assert drained >= 3, f"only {drained} requests were in flight at SIGTERM; the test did not test draining"
    assert status == 0, "\n".join(server.lines[-20:])
    assert any("shutting down" in line for line in server.lines)
