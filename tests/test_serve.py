"""`trtopt serve` as a client sees it: a real server process on loopback, tritonclient over HTTP and gRPC.

One server for the whole module (two model-loading instances, dynamic batching on). Every infer
answer is compared bit for bit with `trtopt.load(...).infer(...)` on the same inputs.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from serving import MAX_BATCH, build_engine  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import trtopt  # noqa: E402
from trtopt.serve.launcher import ServerProcess, serve_command  # noqa: E402

MODEL = "convnet"
BODY_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(engine: Path) -> ServerProcess:
    config = engine.parent.parent / "serve.toml"
    config.write_text(
        "[models.convnet]\ninstances = 2\nthreads = 1\nmax_queue_delay_microseconds = 20000\n"
        "preferred_batch_size = [4]\n"
    )
    process = ServerProcess.start(
        [engine.parent], "--config", str(config), "--max-body-mb", str(BODY_LIMIT / (1 << 20))
    )
    yield process
    assert process.stop() == 0, "\n".join(process.lines[-20:])


@pytest.fixture(scope="module")
def reference(engine: Path):
    with trtopt.load(engine, threads=1) as runner:
        yield runner


def samples(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 16, 16)).astype(np.float32)


def post(server: ServerProcess, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, json.loads(data)


def test_health_metadata_and_config_over_http_and_grpc(server, engine):
    http = httpclient.InferenceServerClient(server.http)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(MODEL)
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready(MODEL)
    metadata = http.get_model_metadata(MODEL)
    version = json.loads((engine / "manifest.json").read_text())["engine"]["sha256"][:12]
    assert metadata["versions"] == [version] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert grpc.get_model_metadata(MODEL, as_json=True)["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}
    ]
    config = grpc.get_model_config(MODEL).config
    assert config.max_batch_size == MAX_BATCH and list(config.input[0].dims) == [3, 16, 16]
    assert config.instance_group[0].count == 2 and list(config.dynamic_batching.preferred_batch_size) == [4]
    assert http.get_model_config(MODEL)["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    assert http.is_model_ready(MODEL, model_version=version) and not http.is_model_ready(MODEL, model_version="nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_equals_the_runner_exactly(server, reference, binary):
    client = httpclient.InferenceServerClient(server.http)
    x = samples(3, seed=1)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(MODEL, [tensor], outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary)])
    np.testing.assert_array_equal(result.as_numpy("logits"), reference.infer({"input": x})["logits"])


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_request_bodies_are_inflated(server, reference, compression):
    client = httpclient.InferenceServerClient(server.http)
    x = samples(2, seed=4)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor], request_compression_algorithm=compression)
    np.testing.assert_array_equal(result.as_numpy("logits"), reference.infer({"input": x})["logits"])


def test_grpc_infer_equals_the_runner_exactly(server, reference):
    client = grpcclient.InferenceServerClient(server.grpc)
    x = samples(2, seed=2)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(MODEL, [tensor])
    np.testing.assert_array_equal(result.as_numpy("logits"), reference.infer({"input": x})["logits"])


def _batch_counts(client: httpclient.InferenceServerClient) -> dict[int, int]:
    stats = client.get_inference_statistics(MODEL)["model_stats"][0]
    return {b["batch_size"]: int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}


def test_concurrent_requests_of_different_sizes_are_batched_and_split_back(server, reference):
    feeds = [samples(rows, seed=10 + i) for i, rows in enumerate([1, 2, 3, 1, 2, 1, 3, 2, 1, 1, 2, 3])]
    before = _batch_counts(httpclient.InferenceServerClient(server.http))

    def one(x: np.ndarray) -> np.ndarray:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return httpclient.InferenceServerClient(server.http).infer(MODEL, [tensor]).as_numpy("logits")

    with concurrent.futures.ThreadPoolExecutor(len(feeds)) as pool:
        answers = list(pool.map(one, feeds))
    for x, answer in zip(feeds, answers):
        np.testing.assert_array_equal(answer, reference.infer({"input": x})["logits"])
    after = _batch_counts(httpclient.InferenceServerClient(server.http))
    grown = [size for size, count in after.items() if count > before.get(size, 0)]
    assert max(grown) > 3, f"requests were never batched together: new batches of sizes {sorted(grown)}"


def _binary_body(x: np.ndarray, declared: int, shape: tuple[int, ...] | None = None) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(shape or x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def _json_body(name: str = "input", shape: tuple[int, ...] = (1, 3, 16, 16), datatype: str = "FP32") -> bytes:
    count = int(np.prod(shape))
    return json.dumps(
        {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": [0.5] * count}]}
    ).encode()


BAD_REQUESTS = {
    "malformed JSON": (f"/v2/models/{MODEL}/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    "wrong datatype": (f"/v2/models/{MODEL}/infer", _json_body(datatype="FP64"), {}, 400, "datatype FP64 given"),
    "wrong shape": (
        f"/v2/models/{MODEL}/infer",
        _json_body(shape=(1, 3, 8, 8)),
        {},
        400,
        "dimension 2 is 8, expected 16",
    ),
    "batch above the profile": (
        f"/v2/models/{MODEL}/infer",
        _json_body(shape=(MAX_BATCH + 1, 3, 16, 16)),
        {},
        400,
        "outside the built profile",
    ),
    "values disagree with shape": (
        f"/v2/models/{MODEL}/infer",
        json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [1.0, 2.0]}]}
        ).encode(),
        {},
        400,
        "2 values given",
    ),
    "unknown model": ("/v2/models/nope/infer", _json_body(), {}, 404, "unknown model 'nope'"),
    "unknown input": (f"/v2/models/{MODEL}/infer", _json_body(name="image"), {}, 400, "unknown input(s) ['image']"),
    "binary size disagrees": (f"/v2/models/{MODEL}/infer", *_binary_body(samples(1), 100), 400, "binary_data_size"),
    "binary size disagrees with shape": (
        f"/v2/models/{MODEL}/infer",
        *_binary_body(samples(1)[:, :, :8], 1536, (1, 3, 16, 16)),
        400,
        "binary_data_size is 1536 bytes, but shape [1, 3, 16, 16] of FP32 needs 3072",
    ),
    "oversized body": (f"/v2/models/{MODEL}/infer", b" " * (BODY_LIMIT + 1), {}, 413, "exceeds the limit"),
    "gzip body inflating past the limit": (
        f"/v2/models/{MODEL}/infer",
        gzip.compress(b" " * (4 * BODY_LIMIT)),
        {"Content-Encoding": "gzip"},
        413,
        "inflates beyond the limit",
    ),
    "unsupported content encoding": (
        f"/v2/models/{MODEL}/infer",
        _json_body(),
        {"Content-Encoding": "br"},
        400,
        "Content-Encoding 'br' is not supported",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(server, reference, case):
    path, body, headers, status, message = BAD_REQUESTS[case]
    got_status, answer = post(server, path, body, headers)
    assert (got_status, set(answer)) == (status, {"error"}), answer
    assert message in answer["error"]
    x = samples(1, seed=3)
    body, headers = _binary_body(x, x.nbytes)
    ok_status, _ = post(server, f"/v2/models/{MODEL}/infer", body, headers)
    assert ok_status == 200


def test_request_timeout_parameter_expires_a_queued_request_with_503(server):
    """1 µs cannot be met: the request is answered 503 from the queue without running."""
    body = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 768}],
            "parameters": {"timeout": 1},
        }
    ).encode()
    status, answer = post(server, f"/v2/models/{MODEL}/infer", body)
    assert status == 503 and "timed out after" in answer["error"]


def test_grpc_bad_input_maps_to_status_codes(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("input", [1, 3, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*dimension 2 is 8"):
        client.infer(MODEL, [tensor])
    with pytest.raises(InferenceServerException, match="NOT_FOUND.*unknown model"):
        client.infer("nope", [tensor])
    huge = grpcclient.InferInput("input", [MAX_BATCH * 12, 3, 16, 16], "FP32")
    huge.set_data_from_numpy(np.zeros((MAX_BATCH * 12, 3, 16, 16), np.float32))  # 288 KiB > the 256 KiB limit
    with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
        client.infer(MODEL, [huge])
    assert client.is_server_ready()


def test_metrics_and_access_log(server):
    client = httpclient.InferenceServerClient(server.http)
    x = samples(1)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(MODEL, [tensor])
    host, port = server.metrics.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    for family in (
        "trtopt_inference_requests_total",
        "trtopt_inference_queue_seconds_bucket",
        "trtopt_inference_compute_seconds_bucket",
        "trtopt_inference_batch_size_bucket",
        "trtopt_inference_in_flight",
    ):
        assert f"{family}{{" in text, family
    success = [
        line
        for line in text.splitlines()
        if line.startswith("trtopt_inference_requests_total{") and 'outcome="success"' in line
    ]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1
    entries = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert any(
        e["protocol"] == "http" and e["path"] == f"/v2/models/{MODEL}/infer" and e["status"] == 200 for e in entries
    )


def test_requests_in_flight_run_concurrently_on_instances(server, reference):
    """Two instances: 8 parallel single-row requests all answer correctly (no instance is shared unsafely)."""
    client = grpcclient.InferenceServerClient(server.grpc)

    def one(seed: int) -> bool:
        x = samples(1, seed=100 + seed)
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return np.array_equal(client.infer(MODEL, [tensor]).as_numpy("logits"), reference.infer({"input": x})["logits"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(8)))


def test_statistics_count_inferences_in_rows(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    before = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    x = samples(5, seed=5)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(MODEL, [tensor])
    after = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 5
    assert int(after["inference_stats"]["success"]["count"]) - int(before["inference_stats"]["success"]["count"]) == 1


def test_a_taken_port_is_a_usage_error(server, engine):
    port = server.http.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "trtopt", "serve", str(engine), "--http-port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and f"cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr


def test_an_engine_that_fails_to_load_stops_the_server_with_exit_1(engine, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(engine, broken)
    engine_file = broken / json.loads((broken / "manifest.json").read_text())["engine"]["file"]
    engine_file.write_bytes(engine_file.read_bytes() + b"tampered")
    result = subprocess.run(serve_command([broken]), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "modified or corrupt" in result.stderr and "trtopt serve: ready" not in result.stderr


def test_import_trtopt_and_runners_stay_free_of_the_serving_stack(engine):
    code = (
        "import sys, trtopt, trtopt.repository, trtopt.backends.onnxruntime, trtopt.cli; "
        f"trtopt.load({str(engine)!r}).close(); "
        "print([m for m in ('starlette', 'uvicorn', 'grpc', 'prometheus_client', 'tritonclient') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
